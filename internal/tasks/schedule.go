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
		cw, err := compileWindow(*w, "spec.schedule.window")
		if err != nil {
			return nil, err
		}
		c.window = cw
	}
	return c, nil
}

// compileWindow compiles w, whose errors name it as field.
func compileWindow(w siteopsv1.MaintenanceWindow, field string) (*window, error) {
	cw := &window{duration: w.Duration.Duration}
	var ok bool
	if cw.hour, cw.minute, ok = parseClock(w.Start); !ok {
		return nil, fmt.Errorf("%s.start %q must be HH:MM", field, w.Start)
	}
	if cw.duration < time.Minute || cw.duration > 24*time.Hour {
		return nil, fmt.Errorf("%s.duration %s must be from 1m to 24h", field, cw.duration)
	}
	tz := w.TimeZone
	if tz == "" {
		tz = "UTC"
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, fmt.Errorf("%s.timeZone %q is not a known IANA time zone", field, tz)
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
			return nil, fmt.Errorf("%s.days: %q is not one of Mon, Tue, Wed, Thu, Fri, Sat, Sun", field, d)
		}
		cw.days[wd] = true
	}
	return cw, nil
}

// Windows are recurring windows compiled together, such as a Package's
// spec.replication.windows: open when any of them is; none means always.
type Windows []*window

// CompileWindows compiles ws, whose errors name the field (such as
// "spec.replication.windows") and the index.
func CompileWindows(ws []siteopsv1.MaintenanceWindow, field string) (Windows, error) {
	out := make(Windows, 0, len(ws))
	for i, w := range ws {
		cw, err := compileWindow(w, fmt.Sprintf("%s[%d]", field, i))
		if err != nil {
			return nil, err
		}
		out = append(out, cw)
	}
	return out, nil
}

// Open reports whether now is inside one of the windows, or there are
// none.
func (ws Windows) Open(now time.Time) bool {
	if len(ws) == 0 {
		return true
	}
	for _, w := range ws {
		if _, _, ok := w.containing(now); ok {
			return true
		}
	}
	return false
}

// NextOpen returns the first instant at or after now inside a window, or
// the zero time if none opens within eight days.
func (ws Windows) NextOpen(now time.Time) time.Time {
	if ws.Open(now) {
		return now
	}
	var next time.Time
	for _, w := range ws {
		if s := w.nextStart(now); !s.IsZero() && (next.IsZero() || s.Before(next)) {
			next = s
		}
	}
	return next
}

// Until returns when the windows stop being open from now on, following
// windows that overlap or touch; the zero time when there are none (always
// open) or now is outside them all.
func (ws Windows) Until(now time.Time) time.Time {
	if len(ws) == 0 {
		return time.Time{}
	}
	var end time.Time
	for t := now; ; {
		var furthest time.Time
		for _, w := range ws {
			if _, e, ok := w.containing(t); ok && e.After(furthest) {
				furthest = e
			}
		}
		if furthest.IsZero() || !furthest.After(t) {
			return end
		}
		end, t = furthest, furthest
		if end.Sub(now) > 8*24*time.Hour {
			return end // windows that never close (every day, 24 h)
		}
	}
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

// parseClock parses "HH:MM" (24 h, two digits each), as the API's pattern
// does: fmt.Sscanf would take "7:000", "-1:00" or " 7:00".
func parseClock(s string) (hour, minute int, ok bool) {
	if len(s) != 5 || s[2] != ':' {
		return 0, 0, false
	}
	for _, i := range []int{0, 1, 3, 4} {
		if s[i] < '0' || s[i] > '9' {
			return 0, 0, false
		}
	}
	hour = int(s[0]-'0')*10 + int(s[1]-'0')
	minute = int(s[3]-'0')*10 + int(s[4]-'0')
	return hour, minute, hour <= 23 && minute <= 59
}

// civilDay is the local calendar day of t in loc, n days on, as midnight
// UTC: calendar arithmetic that no zone transition can move.
func civilDay(t time.Time, loc *time.Location, n int) time.Time {
	l := t.In(loc)
	return time.Date(l.Year(), l.Month(), l.Day()+n, 0, 0, 0, 0, time.UTC)
}

// startOn is the window's opening instant on the local day day (a
// civilDay). A start inside a spring-forward gap opens at the first
// instant after the gap, as the API promises: time.Date alone moves it
// after the gap in some zones (Europe/Paris 02:30 → 03:30) and before it
// in others (America/New_York 02:30 → 01:30).
func (w *window) startOn(day time.Time) time.Time {
	s := time.Date(day.Year(), day.Month(), day.Day(), w.hour, w.minute, 0, 0, w.loc)
	want := time.Date(day.Year(), day.Month(), day.Day(), w.hour, w.minute, 0, 0, time.UTC)
	got := time.Date(s.Year(), s.Month(), s.Day(), s.Hour(), s.Minute(), 0, 0, time.UTC)
	switch zoneStart, zoneEnd := s.ZoneBounds(); {
	case got.Before(want) && !zoneEnd.IsZero():
		return zoneEnd // s is before the gap, which ends where s's zone does
	case got.After(want) && !zoneStart.IsZero():
		return zoneStart // s is after the gap, which ends where s's zone begins
	}
	return s
}

// containing returns the window that contains t, if any: one opening on
// t's local day or one of the two before (a window lasts at most 24 h
// elapsed, which a spring-forward night stretches past the next midnight).
func (w *window) containing(t time.Time) (start, end time.Time, ok bool) {
	for back := 0; back <= 2; back++ {
		day := civilDay(t, w.loc, -back)
		if !w.days[day.Weekday()] {
			continue
		}
		s := w.startOn(day)
		e := s.Add(w.duration)
		if !t.Before(s) && t.Before(e) {
			return s, e, true
		}
	}
	return time.Time{}, time.Time{}, false
}

// nextStart returns the first window start after t.
func (w *window) nextStart(t time.Time) time.Time {
	for ahead := 0; ahead <= 8; ahead++ {
		day := civilDay(t, w.loc, ahead)
		if !w.days[day.Weekday()] {
			continue
		}
		if s := w.startOn(day); s.After(t) {
			return s
		}
	}
	return time.Time{}
}
