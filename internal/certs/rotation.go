package certs

import (
	"crypto/x509"
	"fmt"
	"time"
)

// Keys of the next CA in the CA Secret: made at 2/3 of the current CA's
// lifetime and published, it signs only from the switch (see the package
// doc).
const (
	NextCAKey    = "next-ca.crt"
	NextCAKeyKey = "next-ca.key"
)

// CAFiles are what the CA Secret holds, in PEM: the CA that signs (Cert,
// Key), the next one (published, not signing yet) and the previous one
// (retired at the last switch, published until it expires).
type CAFiles struct {
	Cert, Key         []byte
	NextCert, NextKey []byte
	PreviousCert      []byte
}

// CAFilesOf reads CAFiles from a CA Secret's data.
func CAFilesOf(data map[string][]byte) CAFiles {
	return CAFiles{
		Cert: data[CACertKey], Key: data[CAKeyKey],
		NextCert: data[NextCAKey], NextKey: data[NextCAKeyKey],
		PreviousCert: data[PreviousCAKey],
	}
}

// Data is the CA Secret's data holding f; empty files are left out.
func (f CAFiles) Data() map[string][]byte {
	data := map[string][]byte{}
	for key, value := range map[string][]byte{CACertKey: f.Cert, CAKeyKey: f.Key, NextCAKey: f.NextCert,
		NextCAKeyKey: f.NextKey, PreviousCAKey: f.PreviousCert} {
		if len(value) > 0 {
			data[key] = value
		}
	}
	return data
}

// Bundle is what agents trust at now: the current CA, the next one and the
// previous one, those that have not expired, in that order.
func (f CAFiles) Bundle(now time.Time) []byte {
	return Bundle(now, f.Cert, f.NextCert, f.PreviousCert)
}

// PrepareAt is when the next CA is made and published beside ca: at 2/3 of
// ca's lifetime (RenewAt).
func PrepareAt(ca *x509.Certificate) time.Time { return RenewAt(ca) }

// SwitchAt is when next takes over the signing from current: at 5/6 of
// current's lifetime, and no sooner than a sixth of that lifetime after
// next was made (so a next CA made late still gets its propagation
// window), but no later than 11/12 of current's lifetime (so that the
// serving certificates are re-issued before current expires).
func SwitchAt(current, next *x509.Certificate) time.Time {
	lifetime := current.NotAfter.Sub(current.NotBefore)
	at := current.NotBefore.Add(lifetime * 5 / 6)
	if published := next.NotBefore.Add(lifetime / 6); published.After(at) {
		at = published
	}
	if latest := current.NotBefore.Add(lifetime * 11 / 12); at.After(latest) {
		at = latest
	}
	return at
}

// CAStep is a change of the CA Secret.
type CAStep int

const (
	// CAKeep changes nothing.
	CAKeep CAStep = iota
	// CACreate makes a CA that signs at once: there is none, or it does not
	// load. The old certificate, when it is one, is kept as the previous CA.
	CACreate
	// CAPrepare makes the next CA, published with the current one, which
	// keeps signing.
	CAPrepare
	// CASwitch makes the next CA the current one; the current one becomes
	// the previous.
	CASwitch
)

func (s CAStep) String() string {
	switch s {
	case CAKeep:
		return "keep"
	case CACreate:
		return "create"
	case CAPrepare:
		return "prepare"
	case CASwitch:
		return "switch"
	}
	return fmt.Sprintf("CAStep(%d)", int(s))
}

// CAPlan is what the CA Secret needs at a time.
type CAPlan struct {
	// Step is the change due.
	Step CAStep
	// Reason says why in a few words, for logs; empty for CAKeep.
	Reason string
	// Signer signs the serving certificates: the current CA. Nil for
	// CACreate.
	Signer *Authority
	// RecheckAt is, for CAKeep, when the plan changes by time alone: the
	// next CA is due, the switch is, or the previous CA expires (and
	// leaves the bundle).
	RecheckAt time.Time
}

// PlanCA says what the CA Secret holding f needs at now; see the package
// doc for the timeline.
func PlanCA(f CAFiles, now time.Time) CAPlan {
	if len(f.Cert) == 0 || len(f.Key) == 0 {
		return CAPlan{Step: CACreate, Reason: "no CA yet"}
	}
	current, err := ParseAuthority(f.Cert, f.Key)
	if err != nil {
		return CAPlan{Step: CACreate, Reason: "the CA does not load: " + err.Error()}
	}
	plan := CAPlan{Signer: current}
	next, nextErr := loadNext(f, now)
	switch {
	case next != nil:
		switchAt := SwitchAt(current.Cert, next.Cert)
		if !now.Before(switchAt) {
			plan.Step, plan.Reason = CASwitch, "the switch to the next CA was due at "+stamp(switchAt)
			return plan
		}
		plan.RecheckAt = switchAt
	case !now.Before(PrepareAt(current.Cert)):
		plan.Step, plan.Reason = CAPrepare, fmt.Sprintf("the CA reached 2/3 of its lifetime at %s (it expires %s)",
			stamp(PrepareAt(current.Cert)), stamp(current.Cert.NotAfter))
		if nextErr != nil {
			plan.Reason += "; the next CA does not load: " + nextErr.Error()
		}
		return plan
	default:
		plan.RecheckAt = PrepareAt(current.Cert)
	}
	if previous, err := ParseCertificate(f.PreviousCert); err == nil && now.Before(previous.NotAfter) &&
		previous.NotAfter.Before(plan.RecheckAt) {
		plan.RecheckAt = previous.NotAfter
	}
	return plan
}

// loadNext is the next CA: nil without one; an error when it does not load
// or has expired at now.
func loadNext(f CAFiles, now time.Time) (*Authority, error) {
	if len(f.NextCert) == 0 && len(f.NextKey) == 0 {
		return nil, nil
	}
	next, err := parseAuthority(f.NextCert, f.NextKey, NextCAKey, NextCAKeyKey)
	if err != nil {
		return nil, err
	}
	if !now.Before(next.Cert.NotAfter) {
		return nil, fmt.Errorf("%s: expired at %s", NextCAKey, stamp(next.Cert.NotAfter))
	}
	return next, nil
}

// Apply returns the files after step; made is the CA that CACreate and
// CAPrepare make (nil for the others).
func (f CAFiles) Apply(step CAStep, made *Authority) CAFiles {
	switch step {
	case CACreate:
		out := CAFiles{Cert: made.CertPEM, Key: made.KeyPEM}
		// What the old one signed still verifies against the bundle.
		if old, err := ParseCertificate(f.Cert); err == nil && old.IsCA {
			out.PreviousCert = f.Cert
		}
		return out
	case CAPrepare:
		f.NextCert, f.NextKey = made.CertPEM, made.KeyPEM
	case CASwitch:
		return CAFiles{Cert: f.NextCert, Key: f.NextKey, PreviousCert: f.Cert}
	}
	return f
}

// CAChange is a step RotateCA took, and why.
type CAChange struct {
	Step   CAStep
	Reason string
}

// RotateCA takes the steps PlanCA says are due at now, making CAs with
// newCA, and returns the files after them, the plan they leave (CAKeep)
// and the steps taken, none when nothing was due. Several steps are due at
// once only when the CA was left alone past its switch time (a next CA
// made past 11/12 of the current one's lifetime is switched to at once).
func RotateCA(f CAFiles, now time.Time, newCA func() (*Authority, error)) (CAFiles, CAPlan, []CAChange, error) {
	var changes []CAChange
	for {
		plan := PlanCA(f, now)
		if plan.Step == CAKeep {
			return f, plan, changes, nil
		}
		// At most prepare, switch, prepare, switch: the second next CA is
		// new, so the current one after the second switch is too.
		if len(changes) == 4 {
			return f, plan, changes, fmt.Errorf("the CA does not settle after %d steps (%s next)", len(changes), plan.Step)
		}
		var made *Authority
		if plan.Step != CASwitch {
			var err error
			if made, err = newCA(); err != nil {
				return f, plan, changes, err
			}
		}
		f = f.Apply(plan.Step, made)
		changes = append(changes, CAChange{Step: plan.Step, Reason: plan.Reason})
	}
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
