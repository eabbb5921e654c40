package agent

import (
	"math/rand/v2"
	"time"
)

// backoff is an exponential back-off with full jitter: the n-th delay
// (from 0) is drawn uniformly from [0, min(max, base·2ⁿ)), so that many
// agents failing at the same instant spread their retries over the whole
// window instead of coming back together. With floor f the delay is drawn
// from [f·window, window) instead: for waits on a person (a refused token)
// rather than on a crowd.
type backoff struct {
	base, max time.Duration
	floor     float64
	attempt   int
	// random returns a number in [0, 1); nil means math/rand/v2.
	random func() float64
}

// ceiling is the upper bound of the next delay.
func (b *backoff) ceiling() time.Duration {
	d := b.base
	for i := 0; i < b.attempt && d < b.max; i++ {
		d *= 2
	}
	return min(d, b.max)
}

// next returns the next delay and grows the window.
func (b *backoff) next() time.Duration {
	c := b.ceiling()
	b.attempt++
	return time.Duration((b.floor + (1-b.floor)*randFloat(b.random)) * float64(c))
}

// reset starts the back-off again from base, after a success.
func (b *backoff) reset() { b.attempt = 0 }

// jitter returns d lengthened by a random fraction of at most frac: a
// delay the other side asked for (Retry-After, retryAfterSeconds) is never
// shortened, only spread.
func jitter(d time.Duration, frac float64, random func() float64) time.Duration {
	if d <= 0 {
		return 0
	}
	return d + time.Duration(randFloat(random)*frac*float64(d))
}

// randomUpTo returns a delay drawn uniformly from [0, d).
func randomUpTo(d time.Duration, random func() float64) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(randFloat(random) * float64(d))
}

func randFloat(random func() float64) float64 {
	if random != nil {
		return random()
	}
	return rand.Float64()
}
