// Package samba runs a real Active Directory domain controller (Samba) for
// tests of the DirectoryImport: Start (or StartT in a test) provisions a
// domain, runs samba in the foreground as a child process serving LDAP
// (389, StartTLS) and LDAPS (636) on a loopback address of its own, and
// returns once an LDAPS bind as Administrator succeeds. Helpers add, move
// and remove sites and subnets over LDAPS, as Administrator.
//
// It needs the Debian package samba (Available says whether it is there;
// .ci/run installs it). It runs as root, as CI does.
//
// # How it runs
//
//   - samba-tool domain provision --server-role=dc --dns-backend=NONE
//     (about 4 s on this machine) writes a domain SITEOPS.TEST once per
//     machine and set of Options into the user's cache directory
//     (~/.cache/site-operator-samba/<hash of Samba's version and the
//     options>); each Start copies it (cp -a) into a new temporary
//     directory, so that a start takes about 0.3–0.5 s. Options.FreshProvision
//     provisions in place instead.
//   - smb.conf is written anew: "server services = ldap" only (no smbd,
//     winbindd, KDC, DNS, RPC, NBT, CLDAP, replication), every directory
//     (private, lock, state, cache, pid, sockets, logs) inside the temporary
//     directory, "ldb:nosync = true", and "interfaces = <ip>/24" with "bind
//     interfaces only". Samba only takes an address that no interface has
//     when a mask comes with it: a bare 127.x.y.z or /32 gives "no network
//     interfaces found" and nothing listens. Each DC gets a random free
//     127.200–254.y.z, so DCs of tests in parallel packages do not collide.
//   - samba -i -M prefork (a master and four LDAP workers) runs in a
//     process group of its own, with a pipe as standard input: samba -i ends
//     when its standard input closes, so a test binary that dies takes samba
//     with it (its temporary directory is removed by the next Start).
//     Pause/Resume send SIGSTOP/SIGCONT to the group (connections are still
//     accepted by the kernel, but binds and searches hang until the
//     client's timeout); Kill sends SIGKILL (connection refused) and
//     Restart starts it again on the same data (about 0.2–0.5 s); Stop sends
//     SIGTERM, waits until no process of the group is left, and removes the
//     directory.
//
// # Certificates
//
// Samba's own certificate (generated at first start in private/tls, RSA
// 4096) names the host only in its subject CN (DC1.siteops.test), with no
// subject alternative name: Go refuses it for every server name ("x509:
// certificate relies on legacy Common Name field"), so a client could only
// skip verification. By default the package therefore writes a CA and a
// server certificate of its own (ECDSA, SANs dc1.siteops.test and the IP
// address) and points "tls certfile/keyfile/cafile" at them: CACertPEM and
// ServerName are what a DirectoryImport's spec.tls.caBundle and serverName
// take. TLSGeneratedDNSOnly leaves the IP address out (connecting by
// address then needs serverName); TLSSamba keeps Samba's certificate.
//
// # The directory
//
// A simple bind works as CN=Administrator,CN=Users,DC=siteops,DC=test or as
// Administrator@siteops.test, over LDAPS or after StartTLS; before StartTLS
// it is refused with strongAuthRequired ("Transport encryption required"),
// a wrong password with invalidCredentials. The provisioned domain already
// has one site, Default-First-Site-Name (with the DC's server object in its
// CN=Servers), and an empty CN=Subnets. A site is CN=<name>,CN=Sites,
// CN=Configuration,... (objectClass site) with CN=NTDS Site Settings
// (nTDSSiteSettings) and CN=Servers (serversContainer) under it, as
// samba-tool sites create makes it; Samba accepts a site without them too.
// Site names compare case-insensitively ("a" collides with "A").
// Samba returns DNs in its own escaping (a ';' as \3B, '#' as \#, ...), so
// compare DNs parsed (ldap.ParseDN, EqualFold), not as strings.
//
// Unlike Windows (MaxPageSize 1000), Samba 4.17 serves a page of any size
// and an unpaged search of any size: a client that forgets paging works
// here and not against Windows.
//
// Timings on this machine (2 cores): provisioning 4.2 s; a start from the
// template 0.3–0.5 s (with TLSSamba about 1.5 s more, for Samba's RSA key);
// 500 sites (1,500 entries) 2.1 s; 5,000 subnets with siteObject 10.3 s
// (about 2 ms each, 1.3 ms without siteObject); reading 5,000 subnets in
// pages of 500, 0.65 s. Samba writes one transaction at a time: 1 to 8
// connections add at the same speed (AddSites/AddSubnets use
// BulkConnections), and -M single is no faster than prefork.
//
// # Bad data
//
// Samba (samldb) checks a subnet's cn on add and on rename, and refuses
// with invalidDNSyntax ("samldb: subnet value is invalid"): host bits set
// (10.1.2.3/16, 10.4.0.0/8), anything that is not a prefix, no length
// (10.9.0.0), a length out of range (/33, /129) or zero (0.0.0.0/0, ::/0),
// a leading zero in an IPv4 octet (010.1.0.0/16), IPv4-mapped and
// IPv4-compatible IPv6 (::ffff:10.0.0.0/104, ::10.0.0.0/104), IPv6 not in
// its shortest form (2001:db8:0::/48, 2001:0db8:1::/48), leading or
// trailing spaces.
//
// It accepts, though a strict parser (net/netip) does not take them as
// they are or they are not canonical: a leading zero in the length
// (10.1.0.0/016) or a space after the slash (10.5.0.0/ 16) — both a second
// entry for a prefix that may also exist canonically — and upper-case IPv6
// (2001:DB8::/32, which does collide with 2001:db8::/32: cn compares
// case-insensitively). It also accepts single addresses (/32, /128),
// multicast, link-local and loopback prefixes.
//
// siteObject must name an existing entry (else constraintViolation,
// "Referenced object not found"), so a subnet naming a site that does not
// exist cannot be made; but it may name any entry: CN=Users, a site's
// CN=Servers, CN=Subnets are accepted. Deleting a site removes the
// siteObject of the subnets that named it (a linked attribute), leaving
// them with no site. Only subnets can be created under CN=Subnets, and
// subnets only there.
package samba
