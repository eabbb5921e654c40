package task

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/protocol"
)

var (
	requestIDPattern  = regexp.MustCompile(`^[A-Za-z0-9_-]{16,64}$`)
	hostnamePattern   = regexp.MustCompile(`^[A-Za-z0-9_]([-A-Za-z0-9_.]*[A-Za-z0-9_])?$`)
	macPattern        = regexp.MustCompile(`^([0-9a-f]{2}:){5}[0-9a-f]{2}$`)
	hardwareIDPattern = regexp.MustCompile(`^[A-Za-z0-9][-A-Za-z0-9._:]{0,63}$`)
	versionPattern    = regexp.MustCompile(`^[-A-Za-z0-9._+~]{1,64}$`)
)

// registration is a checked RegisterRequest.
type registration struct {
	protocol.RegisterRequest
	addrs []string // canonical
}

// validateRegistration checks a request's fields and says which one is at
// fault. MAC addresses are lower-cased and de-duplicated first.
func validateRegistration(req protocol.RegisterRequest) (registration, string, error) {
	reg := registration{RegisterRequest: req}
	if !requestIDPattern.MatchString(req.RequestID) {
		return reg, "requestID", errors.New("requestID must be 16 to 64 characters [A-Za-z0-9_-], drawn at random for each registration")
	}
	if len(req.Hostname) > protocol.MaxHostnameLength || !hostnamePattern.MatchString(req.Hostname) {
		return reg, "hostname", fmt.Errorf("hostname must be a host name of at most %d letters, digits, '-', '_' and '.'", protocol.MaxHostnameLength)
	}
	if req.HardwareID != "" && !hardwareIDPattern.MatchString(req.HardwareID) {
		return reg, "hardwareID", errors.New("hardwareID must be at most 64 characters [A-Za-z0-9-._:], starting with a letter or digit")
	}
	if len(req.MACAddresses) > protocol.MaxMACAddresses {
		return reg, "macAddresses", fmt.Errorf("macAddresses: at most %d, not %d", protocol.MaxMACAddresses, len(req.MACAddresses))
	}
	macs := make([]string, 0, len(req.MACAddresses))
	for i, m := range req.MACAddresses {
		m = strings.ToLower(m)
		if !macPattern.MatchString(m) {
			return reg, fmt.Sprintf("macAddresses[%d]", i), fmt.Errorf("macAddresses[%d]: %q is not a MAC address like 00:1a:2b:3c:4d:5e", i, req.MACAddresses[i])
		}
		if !slices.Contains(macs, m) {
			macs = append(macs, m)
		}
	}
	slices.Sort(macs)
	reg.MACAddresses = macs
	if req.HardwareID == "" && len(macs) == 0 {
		return reg, "hardwareID", errors.New("hardwareID or macAddresses is required: they identify the computer when it registers again")
	}
	if req.AgentVersion != "" && !versionPattern.MatchString(req.AgentVersion) {
		return reg, "agentVersion", fmt.Errorf("agentVersion must be at most %d characters [A-Za-z0-9-._+~]", protocol.MaxVersionLength)
	}
	_, canon, err := parseAddresses("addresses", req.Addresses)
	if err != nil {
		return reg, "addresses", err
	}
	reg.addrs = canon
	return reg, "", nil
}

// computerName is the name a new Computer gets: the host name's first
// label, lower-cased, with what a name cannot hold turned into '-'.
func computerName(hostname string) string {
	label, _, _ := strings.Cut(strings.ToLower(hostname), ".")
	b := []byte(label)
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			b[i] = '-'
		}
	}
	name := strings.Trim(string(b), "-")
	if len(name) > 63 {
		name = strings.TrimRight(name[:63], "-")
	}
	if name == "" {
		name = "computer"
	}
	return name
}

// withSuffix makes name unique for identity: at most 52 characters of it,
// '-', and 10 hexadecimal digits of the identity's hash.
func withSuffix(name, identity string) string {
	sum := sha256.Sum256([]byte(identity))
	if len(name) > 52 {
		name = strings.TrimRight(name[:52], "-")
	}
	return name + "-" + hex.EncodeToString(sum[:])[:10]
}

// identity is the hardware identity of a registration, for withSuffix.
func (r registration) identity() string {
	if r.HardwareID != "" {
		return "hw:" + r.HardwareID
	}
	return "mac:" + strings.Join(r.MACAddresses, ",")
}

// sameComputer reports whether comp is the computer that registers: the
// same hardware ID, or, when either side has none, a MAC address in
// common.
func (r registration) sameComputer(comp *siteopsv1.Computer) bool {
	if r.HardwareID != "" && comp.Spec.HardwareID != "" {
		return r.HardwareID == comp.Spec.HardwareID
	}
	for _, m := range r.MACAddresses {
		if slices.Contains(comp.Spec.MACAddresses, m) {
			return true
		}
	}
	return false
}

// replays remembers the request IDs of recent registrations, so that a
// replayed request is refused even before its Computer shows the ID: for
// replayMemory, and at most maxReplays of them (the oldest go first; the
// Computer keeps the last one for good).
type replays struct {
	mu    sync.Mutex
	seen  map[string]struct{}
	order []replay // oldest first
}

type replay struct {
	id string
	at time.Time
}

const (
	replayMemory = time.Hour
	maxReplays   = 200_000
)

// first records id and reports whether it was not seen before.
func (p *replays) first(id string, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen == nil {
		p.seen = map[string]struct{}{}
	}
	for len(p.order) > 0 && (now.Sub(p.order[0].at) > replayMemory || len(p.order) >= maxReplays) {
		delete(p.seen, p.order[0].id)
		p.order = p.order[1:]
	}
	if _, ok := p.seen[id]; ok {
		return false
	}
	p.seen[id] = struct{}{}
	p.order = append(p.order, replay{id: id, at: now})
	return true
}

// identityLocks serialise the registrations of one hardware identity in a
// process, so that an agent that retries at once does not race itself into
// two Computers.
type identityLocks [64]sync.Mutex

func (l *identityLocks) lock(identity string) func() {
	h := fnv.New32a()
	_, _ = h.Write([]byte(identity))
	m := &l[h.Sum32()%uint32(len(l))]
	m.Lock()
	return m.Unlock
}

// register serves POST /v1/register.
func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	if s.kube == nil {
		comeBack(w, time.Minute, "this task service serves no agent API")
		return
	}
	if s.kube.ready(r.Context()) != nil {
		comeBack(w, s.spread(), "the task service is starting")
		return
	}
	raw, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		fail(w, http.StatusUnauthorized, "", "a bootstrap token is required: Authorization: Bearer <id>.<secret>")
		return
	}
	select {
	case s.registering <- struct{}{}:
		defer func() { <-s.registering }()
	default:
		s.metrics.registrationsDeferred.Add(1)
		comeBack(w, s.spread(), "too many registrations at once")
		return
	}
	var req protocol.RegisterRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	reg, field, err := validateRegistration(req)
	if err != nil {
		fail(w, http.StatusBadRequest, field, "%v", err)
		return
	}
	ctx := r.Context()
	log := s.log.With("hostname", reg.Hostname, "requestID", reg.RequestID)
	token, err := s.token(ctx, raw)
	if err != nil {
		log.Info("Refusing a registration", "reason", err)
		fail(w, http.StatusUnauthorized, "", "%v", errTokenRefused)
		return
	}
	addrs, _, _ := parseAddresses("addresses", reg.addrs)
	site, served := s.kube.locator.Serves(addrs, s.cfg.SiteServer)
	if !served {
		fail(w, protocol.StatusRelocate, "addresses", "this task service (SiteServer %s) does not serve the site of these addresses (%q); locate again", s.cfg.SiteServer, site)
		return
	}
	now := s.now()
	if !s.replays.first(reg.RequestID, now) {
		fail(w, http.StatusConflict, "requestID", "registration %s was already received; draw a new requestID", reg.RequestID)
		return
	}
	defer s.identities.lock(token.namespace + "/" + reg.identity())()
	existing, err := s.findComputer(ctx, token.namespace, reg)
	if err != nil {
		log.Error("Looking up the registering Computer", "error", err)
		comeBack(w, 10*time.Second, "the inventory cannot be read")
		return
	}
	if existing != nil {
		if existing.Status.Credential != nil && existing.Status.Credential.Registration == reg.RequestID {
			fail(w, http.StatusConflict, "requestID", "registration %s was already accepted; draw a new requestID", reg.RequestID)
			return
		}
		if nb := existing.Spec.CredentialsNotBefore; nb != nil && nb.After(now) {
			fail(w, http.StatusUnauthorized, "", "Computer %s/%s does not accept a credential before %s (spec.credentialsNotBefore)",
				existing.Namespace, existing.Name, nb.UTC().Format(time.RFC3339))
			return
		}
	}
	if err := s.useToken(ctx, token); err != nil {
		log.Info("Refusing a registration", "reason", err)
		fail(w, http.StatusUnauthorized, "", "%v", errTokenRefused)
		return
	}
	key, err := s.saveComputer(ctx, token.namespace, existing, reg)
	if err != nil {
		log.Error("Saving the registering Computer", "error", err)
		comeBack(w, 10*time.Second, "the Computer could not be saved")
		return
	}
	credential, hash := newCredential(key)
	issued := metav1.NewTime(now).Rfc3339Copy()
	o := observed{lastSeen: issued.Time, addresses: reg.addrs, site: site, siteServer: s.cfg.SiteServer, version: reg.AgentVersion}
	status := map[string]any{
		"credential": siteopsv1.ComputerCredential{Hash: hash, IssuedAt: issued, Registration: reg.RequestID,
			Token: siteopsv1.BootstrapTokenSecretPrefix + token.id},
		"lastSeen":     issued,
		"addresses":    o.addresses,
		"site":         nilIfEmpty(o.site),
		"siteServer":   o.siteServer,
		"agentVersion": nilIfEmpty(o.version),
	}
	if err := patchStatus(ctx, s.kube.client, key, status); err != nil {
		log.Error("Saving the registering Computer's credential", "error", err)
		comeBack(w, 10*time.Second, "the credential could not be saved")
		return
	}
	s.issued.add(key, hash, issued.Time, now)
	s.agents.registered(key, o)
	s.metrics.registrations.Add(1)
	log.Info("Registered an agent", "computer", key.String(), "site", site, "new", existing == nil)
	writeJSON(w, http.StatusOK, protocol.RegisterResponse{Namespace: key.Namespace, Computer: key.Name,
		Credential: credential, Site: site, SiteServer: s.cfg.SiteServer})
}

// token reads and checks the presented bootstrap token.
func (s *Server) token(ctx context.Context, raw string) (bootstrapToken, error) {
	id, secret, ok := parseToken(raw)
	if !ok {
		return bootstrapToken{}, errors.New("the token is not <6 characters [a-z0-9]>.<16 characters [a-z0-9]>")
	}
	var sec corev1.Secret
	key := types.NamespacedName{Namespace: s.tokenNamespace, Name: siteopsv1.BootstrapTokenSecretPrefix + id}
	if err := s.kube.client.Get(ctx, key, &sec); err != nil {
		if apierrors.IsNotFound(err) {
			return bootstrapToken{}, fmt.Errorf("no Secret %s", key)
		}
		return bootstrapToken{}, fmt.Errorf("reading Secret %s: %w", key, err)
	}
	t, err := readToken(&sec)
	if err != nil {
		return bootstrapToken{}, fmt.Errorf("token Secret %s: %w", key, err)
	}
	if err := t.check(secret, s.now()); err != nil {
		return bootstrapToken{}, fmt.Errorf("token %s: %w", id, err)
	}
	return t, nil
}

// useToken counts one registration against a token with a usage limit,
// in its Secret's annotation: a read-modify-write on the live Secret, so
// that replicas that register at once cannot both take the last use.
func (s *Server) useToken(ctx context.Context, t bootstrapToken) error {
	if t.usageLimit == 0 {
		return nil
	}
	s.tokenMu.Lock() // one writer per process: conflicts only between replicas
	defer s.tokenMu.Unlock()
	key := types.NamespacedName{Namespace: s.tokenNamespace, Name: siteopsv1.BootstrapTokenSecretPrefix + t.id}
	for range 5 {
		var sec corev1.Secret
		if err := s.kube.live.Get(ctx, key, &sec); err != nil {
			return fmt.Errorf("reading Secret %s: %w", key, err)
		}
		current, err := readToken(&sec)
		if err != nil {
			return fmt.Errorf("token Secret %s: %w", key, err)
		}
		if err := current.check(t.secret, s.now()); err != nil {
			return fmt.Errorf("token %s: %w", t.id, err)
		}
		if sec.Annotations == nil {
			sec.Annotations = map[string]string{}
		}
		sec.Annotations[siteopsv1.BootstrapTokenUsageAnnotation] = strconv.FormatInt(current.usageCount+1, 10)
		err = s.kube.client.Update(ctx, &sec)
		if err == nil {
			return nil
		}
		if !apierrors.IsConflict(err) {
			return fmt.Errorf("counting a use of Secret %s: %w", key, err)
		}
	}
	return fmt.Errorf("counting a use of Secret %s: too many conflicting writers", key)
}

// findComputer returns the Computer of namespace that is the registering
// computer, by hardware ID and then by MAC address, or nil.
func (s *Server) findComputer(ctx context.Context, namespace string, reg registration) (*siteopsv1.Computer, error) {
	var candidates []siteopsv1.Computer
	if reg.HardwareID != "" {
		var list siteopsv1.ComputerList
		if err := s.kube.client.List(ctx, &list, client.InNamespace(namespace),
			client.MatchingFields{indexHardwareID: reg.HardwareID}); err != nil {
			return nil, err
		}
		candidates = append(candidates, list.Items...)
	}
	for _, mac := range reg.MACAddresses {
		var list siteopsv1.ComputerList
		if err := s.kube.client.List(ctx, &list, client.InNamespace(namespace),
			client.MatchingFields{indexMAC: mac}); err != nil {
			return nil, err
		}
		candidates = append(candidates, list.Items...)
	}
	var found *siteopsv1.Computer
	for i := range candidates {
		c := &candidates[i]
		if !reg.sameComputer(c) {
			continue
		}
		// The oldest, should several claim the computer.
		if found == nil || c.CreationTimestamp.Before(&found.CreationTimestamp) ||
			(c.CreationTimestamp.Equal(&found.CreationTimestamp) && c.Name < found.Name) {
			found = c
		}
	}
	return found, nil
}

// saveComputer creates the Computer of a new computer, or updates the
// identity of a known one, and returns its key.
func (s *Server) saveComputer(ctx context.Context, namespace string, existing *siteopsv1.Computer, reg registration) (types.NamespacedName, error) {
	spec := siteopsv1.ComputerSpec{Hostname: reg.Hostname, MACAddresses: reg.MACAddresses, HardwareID: reg.HardwareID}
	if existing != nil {
		key := client.ObjectKeyFromObject(existing)
		if spec.HardwareID == "" {
			spec.HardwareID = existing.Spec.HardwareID
		}
		if existing.Spec.Hostname == spec.Hostname && slices.Equal(existing.Spec.MACAddresses, spec.MACAddresses) &&
			existing.Spec.HardwareID == spec.HardwareID {
			return key, nil
		}
		patch := client.MergeFrom(existing.DeepCopy())
		existing.Spec.Hostname, existing.Spec.MACAddresses, existing.Spec.HardwareID = spec.Hostname, spec.MACAddresses, spec.HardwareID
		if err := s.kube.client.Patch(ctx, existing, patch); err != nil {
			return key, fmt.Errorf("updating Computer %s: %w", key, err)
		}
		return key, nil
	}
	// The host name, or, when another computer has it, the host name and a
	// hash of this one's identity. A Computer that exists under either name
	// and is this computer (a registration that raced this one, or one the
	// cache does not show yet) is taken, not doubled.
	for _, name := range []string{computerName(reg.Hostname), withSuffix(computerName(reg.Hostname), reg.identity())} {
		comp := &siteopsv1.Computer{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}, Spec: spec}
		err := s.kube.client.Create(ctx, comp)
		if err == nil {
			return client.ObjectKeyFromObject(comp), nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return types.NamespacedName{}, fmt.Errorf("creating Computer %s/%s: %w", namespace, name, err)
		}
		there := &siteopsv1.Computer{}
		if err := s.kube.live.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, there); err != nil {
			return types.NamespacedName{}, fmt.Errorf("reading Computer %s/%s: %w", namespace, name, err)
		}
		if reg.sameComputer(there) {
			return s.saveComputer(ctx, namespace, there, reg)
		}
	}
	return types.NamespacedName{}, fmt.Errorf("creating Computer %s: both its names are taken by other computers", computerName(reg.Hostname))
}
