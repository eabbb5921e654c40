package certs

import (
	"bytes"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// at is the time a fraction num/den into cert's lifetime.
func at(cert *x509.Certificate, num, den int64) time.Time {
	return cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore) * time.Duration(num) / time.Duration(den))
}

func TestPlanCA(t *testing.T) {
	const year = 365 * 24 * time.Hour
	current := mustCA(t, t0, DefaultCALifetime)
	life := current.Cert.NotAfter.Sub(current.Cert.NotBefore)
	prepareAt := at(current.Cert, 2, 3)
	next := mustCA(t, prepareAt, DefaultCALifetime)                   // made on time
	lateNext := mustCA(t, at(current.Cert, 7, 10), DefaultCALifetime) // the operator was off at 2/3
	tooLateNext := mustCA(t, at(current.Cert, 19, 20), DefaultCALifetime)
	expiredNext := mustCA(t, t0, time.Hour)
	previous := mustCA(t, t0.Add(-4*year), DefaultCALifetime) // expires a year after t0
	leaf, leafKey, _ := current.Issue(mustNames(t, "a.example"), t0, time.Hour)
	switchAt := at(current.Cert, 5, 6)
	if got := SwitchAt(current.Cert, next.Cert); !got.Equal(switchAt) {
		t.Fatalf("SwitchAt of a next CA made at 2/3 = %v, want 5/6 of the current's lifetime %v", got, switchAt)
	}
	lateSwitch := lateNext.Cert.NotBefore.Add(life / 6)

	files := func(cur, nxt, prev *Authority) CAFiles {
		var f CAFiles
		if cur != nil {
			f.Cert, f.Key = cur.CertPEM, cur.KeyPEM
		}
		if nxt != nil {
			f.NextCert, f.NextKey = nxt.CertPEM, nxt.KeyPEM
		}
		if prev != nil {
			f.PreviousCert = prev.CertPEM
		}
		return f
	}
	withNext := func(f CAFiles, certPEM, keyPEM []byte) CAFiles { f.NextCert, f.NextKey = certPEM, keyPEM; return f }

	for _, tt := range []struct {
		name        string
		files       CAFiles
		now         time.Time
		want        CAStep
		wantReason  string
		wantRecheck time.Time
	}{
		{"no CA yet", CAFiles{}, t0, CACreate, "no CA yet", time.Time{}},
		{"a CA that does not load", CAFiles{Cert: []byte("junk"), Key: current.KeyPEM}, t0, CACreate, "ca.crt", time.Time{}},
		{"a CA whose key does not match", files(current, nil, nil).withKey(next.KeyPEM), t0, CACreate, "ca.key", time.Time{}},
		{"a leaf as the CA", CAFiles{Cert: leaf, Key: leafKey}, t0, CACreate, "not a CA", time.Time{}},

		{"a young CA: looked at again at 2/3", files(current, nil, nil), t0, CAKeep, "", prepareAt},
		{"a young CA and a previous one: looked at again when the previous expires", files(current, nil, previous), t0, CAKeep, "",
			previous.Cert.NotAfter},
		{"just before 2/3", files(current, nil, nil), prepareAt.Add(-time.Second), CAKeep, "", prepareAt},

		{"past 2/3 with no next CA: prepare one", files(current, nil, nil), prepareAt, CAPrepare, "2/3 of its lifetime", time.Time{}},
		{"past 2/3 with a next CA that does not load", withNext(files(current, nil, nil), []byte("junk"), next.KeyPEM), prepareAt,
			CAPrepare, "next-ca.crt", time.Time{}},
		{"past 2/3 with a next CA whose key does not match", withNext(files(current, nil, nil), next.CertPEM, current.KeyPEM), prepareAt,
			CAPrepare, "next-ca.key", time.Time{}},
		{"past 2/3 with an expired next CA", files(current, expiredNext, nil), prepareAt, CAPrepare, "expired", time.Time{}},

		{"a next CA before the switch: looked at again at the switch", files(current, next, nil), prepareAt.Add(time.Hour), CAKeep, "", switchAt},
		{"just before the switch", files(current, next, nil), switchAt.Add(-time.Second), CAKeep, "", switchAt},
		{"the switch time reached", files(current, next, nil), switchAt, CASwitch, "switch to the next CA", time.Time{}},
		{"long past the switch time", files(current, next, nil), current.Cert.NotAfter.Add(time.Hour), CASwitch, "", time.Time{}},
		{"a next CA made late gets its window past 5/6", files(current, lateNext, nil), switchAt.Add(time.Hour), CAKeep, "", lateSwitch},
		{"a next CA made late switches when its window ends", files(current, lateNext, nil), lateSwitch, CASwitch, "", time.Time{}},
		{"a next CA made past 11/12 switches at once", files(current, tooLateNext, nil), tooLateNext.Cert.NotBefore.Add(time.Minute),
			CASwitch, "", time.Time{}},

		{"after the switch, the previous CA in the bundle: looked at again when it expires", files(next, nil, current),
			switchAt, CAKeep, "", current.Cert.NotAfter},
		{"after the previous CA expired: looked at again at 2/3 of the new one", files(next, nil, current),
			current.Cert.NotAfter.Add(time.Second), CAKeep, "", PrepareAt(next.Cert)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			plan := PlanCA(tt.files, tt.now)
			if plan.Step != tt.want || !strings.Contains(plan.Reason, tt.wantReason) {
				t.Errorf("PlanCA = %s %q, want %s with a reason containing %q", plan.Step, plan.Reason, tt.want, tt.wantReason)
			}
			if !plan.RecheckAt.Equal(tt.wantRecheck) {
				t.Errorf("RecheckAt = %v, want %v", plan.RecheckAt, tt.wantRecheck)
			}
			if tt.want != CACreate && (plan.Signer == nil || !bytes.Equal(plan.Signer.CertPEM, tt.files.Cert)) {
				t.Errorf("the signer is not the current CA")
			}
		})
	}
}

func (f CAFiles) withKey(keyPEM []byte) CAFiles { f.Key = keyPEM; return f }

func TestApplyCA(t *testing.T) {
	current, next, made := mustCA(t, t0, DefaultCALifetime), mustCA(t, t0, DefaultCALifetime), mustCA(t, t0, DefaultCALifetime)
	old := mustCA(t, t0, DefaultCALifetime)
	f := CAFiles{Cert: current.CertPEM, Key: current.KeyPEM, PreviousCert: old.CertPEM}

	prepared := f.Apply(CAPrepare, next)
	if want := (CAFiles{Cert: current.CertPEM, Key: current.KeyPEM, NextCert: next.CertPEM, NextKey: next.KeyPEM,
		PreviousCert: old.CertPEM}); !equalFiles(prepared, want) {
		t.Errorf("prepare: the current CA and the previous one are not kept beside the next")
	}
	switched := prepared.Apply(CASwitch, nil)
	if want := (CAFiles{Cert: next.CertPEM, Key: next.KeyPEM, PreviousCert: current.CertPEM}); !equalFiles(switched, want) {
		t.Errorf("switch: want the next CA current and the current one previous, got %+v", switched.Data())
	}
	created := CAFiles{Cert: current.CertPEM, Key: []byte("junk"), NextCert: next.CertPEM}.Apply(CACreate, made)
	if want := (CAFiles{Cert: made.CertPEM, Key: made.KeyPEM, PreviousCert: current.CertPEM}); !equalFiles(created, want) {
		t.Errorf("create over a CA whose key is lost: want the new one current and the old certificate previous, got %+v", created.Data())
	}
	if created := (CAFiles{Cert: []byte("junk")}).Apply(CACreate, made); created.PreviousCert != nil {
		t.Error("create over junk keeps the junk as the previous CA")
	}
	if data := switched.Data(); len(data) != 3 || CAFilesOf(data).NextCert != nil || !equalFiles(CAFilesOf(data), switched) {
		t.Errorf("Data after a switch holds %d keys, want ca.crt, ca.key and previous-ca.crt", len(data))
	}
}

func equalFiles(a, b CAFiles) bool {
	return bytes.Equal(a.Cert, b.Cert) && bytes.Equal(a.Key, b.Key) && bytes.Equal(a.NextCert, b.NextCert) &&
		bytes.Equal(a.NextKey, b.NextKey) && bytes.Equal(a.PreviousCert, b.PreviousCert)
}

// TestRotationTimeline runs the CA's upkeep every week for 9 years, as
// the operator would, and checks what agents see: a bundle fetched at any
// time keeps verifying every server for a sixth of the CA's lifetime
// after (10 months of 5 years), however old the agent's copy gets within
// that window; signing changes only at a switch, at 5/6 of the old CA's
// lifetime, after its successor was published for that window.
func TestRotationTimeline(t *testing.T) {
	const week = 7 * 24 * time.Hour
	newCA := func(now time.Time) func() (*Authority, error) {
		return func() (*Authority, error) { return NewAuthority("site-operator CA", now, DefaultCALifetime) }
	}
	type seen struct {
		now     time.Time
		signer  *x509.Certificate
		bundle  []*x509.Certificate
		changes []CAChange
	}
	var timeline []seen
	var f CAFiles
	for now := t0; now.Before(t0.Add(9 * 365 * 24 * time.Hour)); now = now.Add(week) {
		var plan CAPlan
		var changes []CAChange
		var err error
		f, plan, changes, err = RotateCA(f, now, newCA(now))
		if err != nil {
			t.Fatalf("%v: %v", now, err)
		}
		if plan.Step != CAKeep || plan.RecheckAt.Before(now) {
			t.Fatalf("%v: RotateCA left %s, looked at again at %v", now, plan.Step, plan.RecheckAt)
		}
		timeline = append(timeline, seen{now: now, signer: plan.Signer.Cert, bundle: parseAll(t, f.Bundle(now)), changes: changes})
	}

	var steps []CAStep
	for i, s := range timeline {
		for _, c := range s.changes {
			steps = append(steps, c.Step)
		}
		if len(s.changes) > 1 {
			t.Errorf("%v: %d steps at once", s.now, len(s.changes))
		}
		if i > 0 && !s.signer.Equal(timeline[i-1].signer) {
			if len(s.changes) != 1 || s.changes[0].Step != CASwitch {
				t.Errorf("%v: the signer changed without a switch: %v", s.now, s.changes)
			}
			old := timeline[i-1].signer
			if s.now.Before(at(old, 5, 6)) || s.now.After(at(old, 5, 6).Add(2*week)) {
				t.Errorf("%v: switched away from a CA made %v, not at 5/6 of its lifetime", s.now, old.NotBefore)
			}
		}
		if len(s.bundle) > 2 || !slices.ContainsFunc(s.bundle, s.signer.Equal) {
			t.Errorf("%v: the bundle of %d CAs does not hold the signer, or holds more than two", s.now, len(s.bundle))
		}
		window := s.signer.NotAfter.Sub(s.signer.NotBefore) / 6
		for _, later := range timeline[i:] {
			if later.now.Sub(s.now) >= window {
				break
			}
			if !slices.ContainsFunc(s.bundle, later.signer.Equal) {
				t.Fatalf("a bundle fetched %v does not verify the servers of %v, %v later", s.now, later.now, later.now.Sub(s.now))
			}
		}
	}
	// Created, then twice: prepared 3 years 4 months into the CA's life and
	// switched to 10 months later.
	if want := []CAStep{CACreate, CAPrepare, CASwitch, CAPrepare, CASwitch}; !slices.Equal(steps, want) {
		t.Errorf("steps %v, want %v", steps, want)
	}
}

func TestRotateCALeftAlone(t *testing.T) {
	aged := mustCA(t, t0, DefaultCALifetime)
	now := aged.Cert.NotAfter.Add(time.Hour) // expired, never prepared
	made := 0
	f, plan, changes, err := RotateCA(CAFiles{Cert: aged.CertPEM, Key: aged.KeyPEM}, now, func() (*Authority, error) {
		made++
		return NewAuthority("site-operator CA", now, DefaultCALifetime)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 2 || changes[0].Step != CAPrepare || changes[1].Step != CASwitch || made != 1 {
		t.Errorf("changes %v with %d CAs made, want a prepare and a switch at once", changes, made)
	}
	if plan.Step != CAKeep || bytes.Equal(plan.Signer.CertPEM, aged.CertPEM) || !bytes.Equal(f.PreviousCert, aged.CertPEM) {
		t.Errorf("want a new signer and the aged CA as the previous one")
	}
	if bundle := parseAll(t, f.Bundle(now)); len(bundle) != 1 {
		t.Errorf("the bundle holds %d CAs, want only the new one (the previous expired)", len(bundle))
	}

	broken := errors.New("no entropy")
	if _, _, _, err := RotateCA(CAFiles{}, t0, func() (*Authority, error) { return nil, broken }); !errors.Is(err, broken) {
		t.Errorf("RotateCA = %v, want the error of making the CA", err)
	}
	f = CAFiles{Cert: aged.CertPEM, Key: aged.KeyPEM}
	if kept, _, changes, err := RotateCA(f, t0, nil); err != nil || changes != nil || !equalFiles(kept, f) {
		t.Errorf("a young CA: %v, %v", changes, err)
	}
}

func TestCABundleOrder(t *testing.T) {
	current, next, previous := mustCA(t, t0, DefaultCALifetime), mustCA(t, t0, DefaultCALifetime), mustCA(t, t0, time.Hour)
	f := CAFiles{Cert: current.CertPEM, NextCert: next.CertPEM, PreviousCert: previous.CertPEM}
	got := parseAll(t, f.Bundle(t0))
	if len(got) != 3 || !got[0].Equal(current.Cert) || !got[1].Equal(next.Cert) || !got[2].Equal(previous.Cert) {
		t.Errorf("bundle of %d, want current, next, previous", len(got))
	}
	if got := parseAll(t, f.Bundle(t0.Add(2*time.Hour))); len(got) != 2 {
		t.Errorf("an expired previous CA stays in the bundle: %d CAs", len(got))
	}
}

func parseAll(t *testing.T, bundle []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for rest := bundle; len(bytes.TrimSpace(rest)) > 0; {
		cert, err := ParseCertificate(rest)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, cert)
		_, rest, _ = bytes.Cut(rest, []byte("-----END CERTIFICATE-----\n"))
	}
	return out
}
