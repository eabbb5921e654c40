package tasks

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

func mustLoc(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func utc(y int, m time.Month, d, h, mi int) time.Time {
	return time.Date(y, m, d, h, mi, 0, 0, time.UTC)
}

func win(start string, d time.Duration, tz string, days ...siteopsv1.Weekday) *siteopsv1.MaintenanceWindow {
	return &siteopsv1.MaintenanceWindow{Start: start, Duration: metav1.Duration{Duration: d}, TimeZone: tz, Days: days}
}

func mustSchedule(t testing.TB, s *siteopsv1.DeploymentTaskSchedule) *Schedule {
	t.Helper()
	c, err := CompileSchedule(s)
	if err != nil {
		t.Fatalf("CompileSchedule: %v", err)
	}
	return c
}

// 2026-06-01 is a Monday; Europe/Paris springs forward on Sunday
// 2026-03-29 (02:00 CET → 03:00 CEST, at 01:00Z) and falls back on Sunday
// 2026-10-25 (03:00 CEST → 02:00 CET, at 01:00Z); America/New_York springs
// forward on Sunday 2026-03-08 (02:00 EST → 03:00 EDT, at 07:00Z).

// instant is one time at which a schedule is asked whether it is open.
type instant struct {
	at   time.Time
	open bool
}

func TestScheduleOpen(t *testing.T) {
	paris := mustLoc(t, "Europe/Paris")
	newYork := mustLoc(t, "America/New_York")
	tokyo := mustLoc(t, "Asia/Tokyo")
	startAt := metav1.NewTime(utc(2026, 6, 1, 12, 0))

	tests := []struct {
		name     string
		schedule *siteopsv1.DeploymentTaskSchedule
		instants []instant
	}{{
		name:     "no schedule is always open",
		schedule: nil,
		instants: []instant{{utc(1970, 1, 1, 0, 0), true}, {utc(2026, 6, 1, 3, 17), true}, {utc(2100, 12, 31, 23, 59), true}},
	}, {
		name:     "an empty schedule is always open",
		schedule: &siteopsv1.DeploymentTaskSchedule{},
		instants: []instant{{utc(2026, 6, 1, 3, 17), true}},
	}, {
		name:     "startAt: closed before, open from it on",
		schedule: &siteopsv1.DeploymentTaskSchedule{StartAt: &startAt},
		instants: []instant{
			{utc(2026, 6, 1, 11, 59), false},
			{startAt.Add(-time.Nanosecond), false},
			{startAt.Time, true},
			{utc(2027, 1, 1, 0, 0), true},
		},
	}, {
		name:     "a window crossing midnight, 22:00 for 4h",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("22:00", 4*time.Hour, "UTC")},
		instants: []instant{
			{utc(2026, 6, 1, 21, 59), false},
			{utc(2026, 6, 1, 22, 0), true},
			{utc(2026, 6, 1, 23, 30), true},
			{utc(2026, 6, 2, 0, 0), true},
			{utc(2026, 6, 2, 1, 59), true},
			{utc(2026, 6, 2, 2, 0), false},
			{utc(2026, 6, 2, 12, 0), false},
			{utc(2026, 6, 2, 21, 59), false},
		},
	}, {
		name:     "timeZone defaults to UTC",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("09:00", time.Hour, "")},
		instants: []instant{{utc(2026, 6, 1, 9, 30), true}, {utc(2026, 6, 1, 10, 0), false}},
	}, {
		name:     "startAt and a window: both must allow",
		schedule: &siteopsv1.DeploymentTaskSchedule{StartAt: &startAt, Window: win("11:00", 2*time.Hour, "UTC")},
		instants: []instant{
			{utc(2026, 5, 31, 11, 30), false}, // in a window, before startAt
			{utc(2026, 6, 1, 11, 30), false},  // in a window, before startAt
			{utc(2026, 6, 1, 12, 0), true},
			{utc(2026, 6, 1, 13, 0), false}, // after startAt, window closed
			{utc(2026, 6, 2, 11, 0), true},
		},
	}, {
		name:     "a window in America/New_York (EDT, -4 in June)",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("09:00", time.Hour, "America/New_York")},
		instants: []instant{
			{time.Date(2026, 6, 1, 9, 30, 0, 0, newYork), true},
			{utc(2026, 6, 1, 13, 30), true}, // the same instant
			{utc(2026, 6, 1, 9, 30), false}, // 05:30 in New York
			{utc(2026, 6, 1, 14, 0), false},
		},
	}, {
		name:     "the same window in UTC",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("09:00", time.Hour, "UTC")},
		instants: []instant{
			{utc(2026, 6, 1, 13, 30), false},
			{utc(2026, 6, 1, 9, 30), true},
		},
	}, {
		name:     "a window in New York follows its DST: -5 in January",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("09:00", time.Hour, "America/New_York")},
		instants: []instant{{utc(2026, 1, 5, 14, 30), true}, {utc(2026, 1, 5, 13, 30), false}},
	}, {
		// The API: a start inside the skipped hour opens the window at the
		// first instant after the gap. time.Date alone would open it at
		// 03:30 CEST, half an hour late.
		name:     "Europe/Paris spring forward: 02:30 for 1h opens at 03:00 CEST",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("02:30", time.Hour, "Europe/Paris")},
		instants: []instant{
			{utc(2026, 3, 29, 0, 59), false},                   // 01:59 CET
			{time.Date(2026, 3, 29, 3, 0, 0, 0, paris), true},  // 01:00Z, the first instant after the gap
			{time.Date(2026, 3, 29, 3, 59, 0, 0, paris), true}, // 01:59Z
			{utc(2026, 3, 29, 2, 0), false},                    // 04:00 CEST: 1h elapsed
			{time.Date(2026, 3, 28, 2, 30, 0, 0, paris), true}, // the day before, CET
			{time.Date(2026, 3, 30, 2, 30, 0, 0, paris), true}, // the day after, CEST
			{time.Date(2026, 3, 30, 2, 29, 0, 0, paris), false},
		},
	}, {
		name:     "Europe/Paris spring forward: a start at 02:00 opens at 03:00 CEST",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("02:00", 30*time.Minute, "Europe/Paris")},
		instants: []instant{
			{utc(2026, 3, 29, 0, 59), false},
			{utc(2026, 3, 29, 1, 0), true},
			{utc(2026, 3, 29, 1, 29), true},
			{utc(2026, 3, 29, 1, 30), false},
		},
	}, {
		// time.Date moves 02:30 on that day in New York before the gap,
		// to 01:30 EST.
		name:     "America/New_York spring forward: 02:30 for 1h opens at 03:00 EDT",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("02:30", time.Hour, "America/New_York")},
		instants: []instant{
			{utc(2026, 3, 8, 6, 30), false}, // 01:30 EST
			{utc(2026, 3, 8, 6, 59), false}, // 01:59 EST
			{utc(2026, 3, 8, 7, 0), true},   // 03:00 EDT
			{utc(2026, 3, 8, 7, 59), true},
			{utc(2026, 3, 8, 8, 0), false},
		},
	}, {
		name:     "Europe/Paris fall back: 01:00 for 2h lasts 2h elapsed",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("01:00", 2*time.Hour, "Europe/Paris")},
		instants: []instant{
			{utc(2026, 10, 24, 22, 59), false}, // 00:59 CEST
			{utc(2026, 10, 24, 23, 0), true},   // 01:00 CEST
			{utc(2026, 10, 25, 0, 59), true},   // 02:59 CEST
			{utc(2026, 10, 25, 1, 0), false},   // 02:00 CET: 2h elapsed, though the clock says 1h
			{utc(2026, 10, 25, 1, 30), false},  // 02:30 CET
		},
	}, {
		name:     "days: Mon only",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("09:00", 8*time.Hour, "UTC", "Mon")},
		instants: []instant{
			{utc(2026, 5, 31, 10, 0), false}, // Sunday
			{utc(2026, 6, 1, 10, 0), true},   // Monday
			{utc(2026, 6, 2, 10, 0), false},  // Tuesday
			{utc(2026, 6, 8, 16, 59), true},  // the next Monday
		},
	}, {
		name:     "days: a window crossing midnight belongs to the day it opens (Sun)",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("22:00", 4*time.Hour, "UTC", "Sun")},
		instants: []instant{
			{utc(2026, 5, 31, 23, 0), true}, // Sunday
			{utc(2026, 6, 1, 1, 0), true},   // early Monday, Sunday's window
			{utc(2026, 6, 1, 2, 0), false},
			{utc(2026, 6, 1, 22, 30), false}, // Monday's would-be window
			{utc(2026, 5, 31, 1, 0), false},  // early Sunday: Saturday's would-be window
		},
	}, {
		name:     "days: a window crossing midnight belongs to the day it opens (Mon)",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("22:00", 4*time.Hour, "UTC", "Mon")},
		instants: []instant{
			{utc(2026, 6, 1, 1, 0), false}, // early Monday: Sunday's would-be window
			{utc(2026, 6, 1, 23, 0), true},
			{utc(2026, 6, 2, 1, 0), true}, // early Tuesday, Monday's window
		},
	}, {
		name:     "days are local days of the window's zone",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("07:00", time.Hour, "Asia/Tokyo", "Mon")},
		instants: []instant{
			{time.Date(2026, 6, 1, 7, 30, 0, 0, tokyo), true},
			{utc(2026, 5, 31, 22, 30), true},  // Sunday in UTC, Monday in Tokyo
			{utc(2026, 6, 1, 22, 30), false},  // Monday in UTC, Tuesday in Tokyo
			{utc(2026, 6, 1, 7, 30), false},   // 16:30 in Tokyo
			{utc(2026, 5, 30, 22, 30), false}, // Sunday in Tokyo
		},
	}, {
		// Saturday 23:30 CET + 24h elapsed is Monday 00:30 CEST: the window
		// reaches past the next midnight, into a day two after its own.
		name:     "a 24h window stretched by spring forward into the second day",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("23:30", 24*time.Hour, "Europe/Paris", "Sat")},
		instants: []instant{
			{utc(2026, 3, 28, 22, 29), false},
			{utc(2026, 3, 28, 22, 30), true},
			{time.Date(2026, 3, 30, 0, 15, 0, 0, paris), true}, // Monday
			{utc(2026, 3, 29, 22, 30), false},                  // Monday 00:30 CEST
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustSchedule(t, tt.schedule)
			for _, in := range tt.instants {
				if got := s.Open(in.at); got != in.open {
					t.Errorf("Open(%s) = %v, want %v", in.at.UTC().Format(time.RFC3339), got, in.open)
				}
			}
		})
	}
}

func TestScheduleNextOpen(t *testing.T) {
	paris := mustLoc(t, "Europe/Paris")
	startAt := metav1.NewTime(utc(2026, 6, 3, 12, 0)) // a Wednesday

	tests := []struct {
		name     string
		schedule *siteopsv1.DeploymentTaskSchedule
		now      time.Time
		want     time.Time
	}{{
		name: "no schedule: now",
		now:  utc(2026, 6, 1, 3, 17),
		want: utc(2026, 6, 1, 3, 17),
	}, {
		name:     "before startAt, no window: startAt",
		schedule: &siteopsv1.DeploymentTaskSchedule{StartAt: &startAt},
		now:      utc(2026, 6, 1, 0, 0),
		want:     startAt.Time,
	}, {
		name:     "after startAt, no window: now",
		schedule: &siteopsv1.DeploymentTaskSchedule{StartAt: &startAt},
		now:      utc(2026, 6, 4, 0, 0),
		want:     utc(2026, 6, 4, 0, 0),
	}, {
		name:     "inside the window: now",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("22:00", 4*time.Hour, "UTC")},
		now:      utc(2026, 6, 2, 1, 0),
		want:     utc(2026, 6, 2, 1, 0),
	}, {
		name:     "before today's window: its start",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("22:00", 4*time.Hour, "UTC")},
		now:      utc(2026, 6, 2, 2, 0),
		want:     utc(2026, 6, 2, 22, 0),
	}, {
		name:     "after today's window: tomorrow's start",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("09:00", time.Hour, "UTC")},
		now:      utc(2026, 6, 1, 10, 0),
		want:     utc(2026, 6, 2, 9, 0),
	}, {
		name:     "before startAt, startAt inside a window: startAt",
		schedule: &siteopsv1.DeploymentTaskSchedule{StartAt: &startAt, Window: win("11:00", 2*time.Hour, "UTC")},
		now:      utc(2026, 6, 1, 11, 30), // inside a window, but before startAt
		want:     startAt.Time,
	}, {
		name:     "before startAt, startAt outside the windows: the first start after it",
		schedule: &siteopsv1.DeploymentTaskSchedule{StartAt: &startAt, Window: win("09:00", time.Hour, "UTC")},
		now:      utc(2026, 6, 1, 9, 30),
		want:     utc(2026, 6, 4, 9, 0),
	}, {
		name:     "across days: Mon only, from Tuesday",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("09:00", time.Hour, "UTC", "Mon")},
		now:      utc(2026, 6, 2, 9, 30),
		want:     utc(2026, 6, 8, 9, 0),
	}, {
		name:     "across days: Mon only, from Monday after the window",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("09:00", time.Hour, "UTC", "Mon")},
		now:      utc(2026, 6, 1, 10, 0),
		want:     utc(2026, 6, 8, 9, 0),
	}, {
		name:     "across days: Sat and Sun, from Friday",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("20:00", time.Hour, "UTC", "Sun", "Sat")},
		now:      utc(2026, 6, 5, 21, 0),
		want:     utc(2026, 6, 6, 20, 0),
	}, {
		name:     "in another zone",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("09:00", time.Hour, "America/New_York")},
		now:      utc(2026, 6, 1, 12, 0),
		want:     utc(2026, 6, 1, 13, 0),
	}, {
		name:     "into the spring-forward gap: the first instant after it",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("02:30", time.Hour, "Europe/Paris")},
		now:      utc(2026, 3, 28, 23, 0),
		want:     time.Date(2026, 3, 29, 3, 0, 0, 0, paris),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustSchedule(t, tt.schedule)
			if got := s.NextOpen(tt.now); !got.Equal(tt.want) {
				t.Errorf("NextOpen(%s) = %s, want %s", tt.now.Format(time.RFC3339), got.UTC().Format(time.RFC3339), tt.want.UTC().Format(time.RFC3339))
			}
		})
	}
}

func TestScheduleNextClose(t *testing.T) {
	tests := []struct {
		name     string
		schedule *siteopsv1.DeploymentTaskSchedule
		now      time.Time
		want     time.Time // zero: none
	}{{
		name: "no schedule: none",
		now:  utc(2026, 6, 1, 0, 0),
	}, {
		name:     "no window: none",
		schedule: &siteopsv1.DeploymentTaskSchedule{StartAt: &metav1.Time{Time: utc(2026, 1, 1, 0, 0)}},
		now:      utc(2026, 6, 1, 0, 0),
	}, {
		name:     "outside the window: none",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("22:00", 4*time.Hour, "UTC")},
		now:      utc(2026, 6, 1, 12, 0),
	}, {
		name:     "inside, before midnight: the next day's 02:00",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("22:00", 4*time.Hour, "UTC")},
		now:      utc(2026, 6, 1, 22, 0),
		want:     utc(2026, 6, 2, 2, 0),
	}, {
		name:     "inside, after midnight: the same day's 02:00",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("22:00", 4*time.Hour, "UTC")},
		now:      utc(2026, 6, 2, 1, 59),
		want:     utc(2026, 6, 2, 2, 0),
	}, {
		name:     "fall back: 2h elapsed after 01:00 CEST is 02:00 CET",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("01:00", 2*time.Hour, "Europe/Paris")},
		now:      utc(2026, 10, 24, 23, 0),
		want:     utc(2026, 10, 25, 1, 0),
	}, {
		name:     "spring forward: 1h after the gap's end",
		schedule: &siteopsv1.DeploymentTaskSchedule{Window: win("02:30", time.Hour, "Europe/Paris")},
		now:      utc(2026, 3, 29, 1, 0),
		want:     utc(2026, 3, 29, 2, 0),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustSchedule(t, tt.schedule)
			if got := s.NextClose(tt.now); !got.Equal(tt.want) {
				t.Errorf("NextClose(%s) = %s, want %s", tt.now.Format(time.RFC3339), got, tt.want)
			}
		})
	}
}

// TestScheduleConsistent walks minute by minute across both of 2026's DST
// changes in Paris and checks Open, NextOpen and NextClose against one
// another: NextOpen of a closed minute is the first open minute after it,
// NextClose of an open minute the first closed one.
func TestScheduleConsistent(t *testing.T) {
	startAt := metav1.NewTime(utc(2026, 3, 26, 5, 7))
	schedules := map[string]*siteopsv1.DeploymentTaskSchedule{
		"22:00 4h":              {Window: win("22:00", 4*time.Hour, "Europe/Paris")},
		"02:30 1h":              {Window: win("02:30", time.Hour, "Europe/Paris")},
		"01:00 2h":              {Window: win("01:00", 2*time.Hour, "Europe/Paris")},
		"02:15 45m Sun":         {Window: win("02:15", 45*time.Minute, "Europe/Paris", "Sun")},
		"23:30 24h Sat":         {Window: win("23:30", 24*time.Hour, "Europe/Paris", "Sat")},
		"startAt, 09:00 1h Mon": {StartAt: &startAt, Window: win("09:00", time.Hour, "Europe/Paris", "Mon")},
	}
	spans := [][2]time.Time{
		{utc(2026, 3, 25, 0, 0), utc(2026, 4, 4, 0, 0)},
		{utc(2026, 10, 21, 0, 0), utc(2026, 10, 31, 0, 0)},
	}
	for name, spec := range schedules {
		t.Run(name, func(t *testing.T) {
			s := mustSchedule(t, spec)
			for _, span := range spans {
				var minutes []time.Time
				var open []bool
				for m := span[0]; m.Before(span[1]); m = m.Add(time.Minute) {
					minutes = append(minutes, m)
					open = append(open, s.Open(m))
				}
				var opened int
				nextFlip := -1 // the first minute after i whose state differs; -1: none in the span
				for i := len(minutes) - 1; i >= 0; i-- {
					if i+1 < len(minutes) && open[i+1] != open[i] {
						nextFlip = i + 1
					}
					m := minutes[i]
					if open[i] {
						opened++
						if got := s.NextOpen(m); !got.Equal(m) {
							t.Fatalf("open at %s, but NextOpen = %s", m, got)
						}
						if got := s.NextClose(m); nextFlip >= 0 && !got.Equal(minutes[nextFlip]) {
							t.Fatalf("NextClose(%s) = %s, want %s", m, got, minutes[nextFlip])
						}
						continue
					}
					// Before startAt, a window may contain m: NextClose is its end.
					beforeStart := spec.StartAt != nil && m.Before(spec.StartAt.Time)
					if got := s.NextClose(m); !got.IsZero() && !beforeStart {
						t.Fatalf("closed at %s, but NextClose = %s", m, got)
					}
					if got := s.NextOpen(m); nextFlip >= 0 && !got.Equal(minutes[nextFlip]) {
						t.Fatalf("NextOpen(%s) = %s, want %s", m, got, minutes[nextFlip])
					}
				}
				if opened == 0 {
					t.Fatalf("never open from %s to %s", span[0], span[1])
				}
			}
		})
	}
}

func TestCompileScheduleInvalid(t *testing.T) {
	tests := []struct {
		name   string
		window *siteopsv1.MaintenanceWindow
		field  string
	}{
		{"unknown time zone", win("09:00", time.Hour, "Mars/Olympus_Mons"), "spec.schedule.window.timeZone"},
		{"start 24:00", win("24:00", time.Hour, "UTC"), "spec.schedule.window.start"},
		{"start 7:00", win("7:00", time.Hour, "UTC"), "spec.schedule.window.start"},
		{"start 07:60", win("07:60", time.Hour, "UTC"), "spec.schedule.window.start"},
		{"start 7:000", win("7:000", time.Hour, "UTC"), "spec.schedule.window.start"},
		{"start -1:00", win("-1:00", time.Hour, "UTC"), "spec.schedule.window.start"},
		{"start 07:-1", win("07:-1", time.Hour, "UTC"), "spec.schedule.window.start"},
		{"start +7:00", win("+7:00", time.Hour, "UTC"), "spec.schedule.window.start"},
		{"start with a space", win(" 7:00", time.Hour, "UTC"), "spec.schedule.window.start"},
		{"start 07.00", win("07.00", time.Hour, "UTC"), "spec.schedule.window.start"},
		{"start 07:0x", win("07:0x", time.Hour, "UTC"), "spec.schedule.window.start"},
		{"start empty", win("", time.Hour, "UTC"), "spec.schedule.window.start"},
		{"duration 0", win("09:00", 0, "UTC"), "spec.schedule.window.duration"},
		{"duration 30s", win("09:00", 30*time.Second, "UTC"), "spec.schedule.window.duration"},
		{"duration 24h1m", win("09:00", 24*time.Hour+time.Minute, "UTC"), "spec.schedule.window.duration"},
		{"day Monday", win("09:00", time.Hour, "UTC", "Monday"), "spec.schedule.window.days"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := CompileSchedule(&siteopsv1.DeploymentTaskSchedule{Window: tt.window})
			if err == nil {
				t.Fatalf("CompileSchedule = %+v, want an error", s)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error %q does not name %s", err, tt.field)
			}
		})
	}
}

func TestCompileScheduleBounds(t *testing.T) {
	for _, w := range []*siteopsv1.MaintenanceWindow{
		win("00:00", time.Minute, "UTC"),
		win("23:59", 24*time.Hour, "UTC"),
		win("12:00", time.Hour, "Etc/GMT+5", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
	} {
		if _, err := CompileSchedule(&siteopsv1.DeploymentTaskSchedule{Window: w}); err != nil {
			t.Errorf("CompileSchedule(%+v): %v", w, err)
		}
	}
}

func TestWindows(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	ws, err := CompileWindows([]siteopsv1.MaintenanceWindow{
		{Start: "01:00", Duration: metav1.Duration{Duration: 2 * time.Hour}},
		{Start: "02:30", Duration: metav1.Duration{Duration: 2 * time.Hour}},
		{Start: "22:00", Duration: metav1.Duration{Duration: time.Hour}, TimeZone: "Europe/Paris", Days: []siteopsv1.Weekday{"Sat"}},
	}, "spec.replication.windows")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		now             string
		open            bool
		until, nextOpen string
	}{
		{"2026-11-26T01:30:00Z", true, "2026-11-26T04:30:00Z", "2026-11-26T01:30:00Z"}, // overlapping windows chain
		{"2026-11-26T04:30:00Z", false, "", "2026-11-27T01:00:00Z"},                    // the end is outside
		{"2026-11-26T12:00:00Z", false, "", "2026-11-27T01:00:00Z"},
		{"2026-11-28T21:30:00Z", true, "2026-11-28T22:00:00Z", "2026-11-28T21:30:00Z"}, // Saturday 22:30 in Paris
		{"2026-11-27T21:30:00Z", false, "", "2026-11-28T01:00:00Z"},                    // Friday: not that one
	} {
		now := at(tt.now)
		if got := ws.Open(now); got != tt.open {
			t.Errorf("%s: Open = %v, want %v", tt.now, got, tt.open)
		}
		until := ws.Until(now)
		if (tt.until == "" && !until.IsZero()) || (tt.until != "" && !until.Equal(at(tt.until))) {
			t.Errorf("%s: Until = %v, want %q", tt.now, until, tt.until)
		}
		if got := ws.NextOpen(now); !got.Equal(at(tt.nextOpen)) {
			t.Errorf("%s: NextOpen = %v, want %s", tt.now, got, tt.nextOpen)
		}
	}

	var none Windows
	if !none.Open(at("2026-11-26T12:00:00Z")) || !none.Until(at("2026-11-26T12:00:00Z")).IsZero() {
		t.Error("no window must mean always open, with no end")
	}
	_, err = CompileWindows([]siteopsv1.MaintenanceWindow{
		{Start: "01:00", Duration: metav1.Duration{Duration: time.Hour}},
		{Start: "02:00", Duration: metav1.Duration{Duration: time.Hour}, TimeZone: "Mars/Olympus"},
	}, "spec.replication.windows")
	if err == nil || !strings.Contains(err.Error(), `spec.replication.windows[1].timeZone "Mars/Olympus"`) {
		t.Errorf("an unknown zone: %v", err)
	}
}
