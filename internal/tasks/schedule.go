package tasks

import (
	"fmt"
	"time"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// Schedule is a task's compiled spec.schedule.
type Schedule struct {
	startAt time.Time // zero: at once
	window  *window
}

type window struct {
	hour, minute int
	duration     time.Duration
	loc          *time.Location
	days         [7]bool // by time.Weekday
}

var weekdays = map[siteopsv1.Weekday]time.Weekday{
	"Sun": time.Sunday, "Mon": time.Monday, "Tue": time.Tuesday, "Wed": time.Wednesday,
	"Thu": time.Thursday, "Fri": time.Friday, "Sat": time.Saturday,
}

// CompileSchedule compiles spec.schedule (nil: at once, any time), or
// reports why it cannot be used (an unknown time zone).
func CompileSchedule(s *siteopsv1.DeploymentTaskSchedule) (*Schedule, error) {
	c := &Schedule{}
	if s == nil {
		return c, nil
	}
	if s.StartAt != nil {
		c.startAt = s.StartAt.Time
	}
	if w := s.Window; w != nil {
		cw := &window{duration: w.Duration.Duration}
		if _, err := fmt.Sscanf(w.Start, "%d:%d", &cw.hour, &cw.minute); err != nil || cw.hour > 23 || cw.minute > 59 || len(w.Start) != 5 {
			return nil, fmt.Errorf("spec.schedule.window.start %q must be HH:MM", w.Start)
		}
		if cw.duration < time.Minute || cw.duration > 24*time.Hour {
			return nil, fmt.Errorf("spec.schedule.window.duration %s must be from 1m to 24h", cw.duration)
		}
		tz := w.TimeZone
		if tz == "" {
			tz = "UTC"
		}
		loc, err := time.LoadLocation(tz)
		if err != nil {
			return nil, fmt.Errorf("spec.schedule.window.timeZone %q is not a known IANA time zone", tz)
		}
		cw.loc = loc
		if len(w.Days) == 0 {
			for d := range cw.days {
				cw.days[d] = true
			}
		}
		for _, d := range w.Days {
			wd, ok := weekdays[d]
			if !ok {
				return nil, fmt.Errorf("spec.schedule.window.days: %q is not one of Mon, Tue, Wed, Thu, Fri, Sat, Sun", d)
			}
			cw.days[wd] = true
		}
		c.window = cw
	}
	return c, nil
}

// Open reports whether work may start at now.
func (c *Schedule) Open(now time.Time) bool {
	if now.Before(c.startAt) {
		return false
	}
	if c.window == nil {
		return true
	}
	_, _, ok := c.window.containing(now)
	return ok
}

// NextOpen returns the first instant at or after now at which work may
// start, or the zero time if none comes within the next eight days (a
// window on no day cannot be configured, so that means never).
func (c *Schedule) NextOpen(now time.Time) time.Time {
	t := now
	if t.Before(c.startAt) {
		t = c.startAt
	}
	if c.window == nil {
		return t
	}
	if _, _, ok := c.window.containing(t); ok {
		return t
	}
	return c.window.nextStart(t)
}

// NextClose returns when the window containing now closes, or the zero
// time when there is no window or now is outside it.
func (c *Schedule) NextClose(now time.Time) time.Time {
	if c.window == nil {
		return time.Time{}
	}
	_, end, ok := c.window.containing(now)
	if !ok {
		return time.Time{}
	}
	return end
}

// startOn is the window's opening instant on the local day of day (its
// year, month and day in the window's zone). A start inside a
// spring-forward gap is moved past the gap, as time.Date does.
func (w *window) startOn(y int, m time.Month, d int) time.Time {
	return time.Date(y, m, d, w.hour, w.minute, 0, 0, w.loc)
}

// containing returns the window that contains t, if any: the one opening
// on t's local day or the day before (a window lasts at most 24 h).
func (w *window) containing(t time.Time) (start, end time.Time, ok bool) {
	local := t.In(w.loc)
	for back := 0; back <= 1; back++ {
		day := local.AddDate(0, 0, -back)
		s := w.startOn(day.Year(), day.Month(), day.Day())
		if !w.days[s.Weekday()] {
			continue
		}
		e := s.Add(w.duration)
		if !t.Before(s) && t.Before(e) {
			return s, e, true
		}
	}
	return time.Time{}, time.Time{}, false
}

// nextStart returns the first window start after t.
func (w *window) nextStart(t time.Time) time.Time {
	local := t.In(w.loc)
	for ahead := 0; ahead <= 8; ahead++ {
		day := local.AddDate(0, 0, ahead)
		s := w.startOn(day.Year(), day.Month(), day.Day())
		if w.days[s.Weekday()] && s.After(t) {
			return s
		}
	}
	return time.Time{}
}
