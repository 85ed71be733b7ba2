package access

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// Users is a parsed set of basic-auth credentials. It is immutable once parsed and safe for
// concurrent use; a changed Secret is parsed into a new Users, which also starts with an
// empty cache of verified passwords, so a removed user or a changed password stops working
// at once.
//
// Verify costs what the stored hash costs (bcrypt at its usual cost 10 to 12: 50 to 200 ms of
// one core), so Users remembers successful verifications: a client that keeps sending the
// right password pays the hash once, then about a microsecond per request. Failures are never
// remembered. An unknown user costs as much as a known user with a wrong password whose hash
// is the set's most expensive, so response times do not tell which users exist. A known user
// whose hash is cheaper than the most expensive one still answers faster; that reveals the
// user exists, and a set of one hash kind does not have the difference.
type Users struct {
	byName map[string]*credential
	// decoy is verified in place of an unknown user: the most expensive kind and cost of the
	// set, with a random salt and digest that no password is known to produce.
	decoy *credential
	// macs hands out HMAC-SHA256 states keyed with this set's random key, which turn a user
	// and password into a cache key; the password itself is never kept.
	macs  sync.Pool
	cache verifiedCache
}

// ParseError reports a line (or Secret key) ParseHtpasswd or ParseAuthMap cannot use. It names
// where the problem is, never the hash: the error ends up in Events and logs.
type ParseError struct {
	// Line is the 1-based line of an htpasswd file, 0 for an auth-map Secret.
	Line int
	// User is the user name of the line or key, empty when the line has none.
	User string
	// Err is one of this package's fixed errors, ErrUnsupportedHash among them; it never
	// carries text from the input.
	Err error
}

// Error names the line or key and the user (quoted, so control bytes cannot forge log lines).
func (e *ParseError) Error() string {
	switch {
	case e.Line > 0 && e.User != "":
		return fmt.Sprintf("htpasswd line %d, user %q: %v", e.Line, e.User, e.Err)
	case e.Line > 0:
		return fmt.Sprintf("htpasswd line %d: %v", e.Line, e.Err)
	default:
		return fmt.Sprintf("auth-map user %q: %v", e.User, e.Err)
	}
}

// Unwrap returns Err, so errors.Is(err, ErrUnsupportedHash) works on a ParseError.
func (e *ParseError) Unwrap() error { return e.Err }

// ErrUnsupportedHash is the ParseError cause for a hash of a kind this package does not verify
// (DES crypt, yescrypt, MD5 "$md5$", ...). A set with one such entry fails to parse as a whole
// rather than let that user be silently refused or, worse, matched loosely.
var ErrUnsupportedHash = errors.New("hash format not supported " +
	"(supported: bcrypt $2a$/$2b$/$2y$, $apr1$, $1$, $5$, $6$, {SHA}, {SSHA}, {PLAIN})")

// The other ParseError causes. Their texts are fixed: nothing from the input goes into them.
var (
	errNoSeparator    = errors.New("no ':' between user and hash")
	errEmptyUser      = errors.New("empty user name")
	errBadUser        = errors.New("user name contains ':', a line break or starts with '#'")
	errStrayCR        = errors.New("carriage return inside the line")
	errBcrypt         = errors.New("malformed bcrypt hash")
	errBcryptCost     = errors.New("bcrypt cost outside 4.." + strconv.Itoa(maxBcryptCost))
	errMD5Crypt       = errors.New("malformed MD5-crypt hash (salt of 0 to 8 characters, 22-character digest)")
	errSHACrypt       = errors.New("malformed SHA-crypt hash (salt of 0 to 16 characters, 43- or 86-character digest)")
	errSHACryptRounds = errors.New("SHA-crypt rounds= outside 1000.." + strconv.Itoa(maxSHACryptRounds) +
		" or not in canonical decimal")
	errSHA        = errors.New("malformed {SHA} hash (base64 of a 20-byte SHA-1 digest)")
	errSSHA       = errors.New("malformed {SSHA} hash (base64 of a 20-byte SHA-1 digest and a salt)")
	errMultiline  = errors.New("value holds more than one line")
	errRandSource = errors.New("reading random bytes")
)

// Cost ceilings. nginx would compute any cost the file names, but one request at bcrypt cost
// 31 or a billion SHA-crypt rounds holds a core of the shared proxy for hours, and whoever may
// write an Ingress's Secret would have that lever on every route. bcrypt stops at the highest
// cost Apache's htpasswd writes (-C 17, about 7 s a check here); SHA-crypt at 2,000,000
// rounds, above passlib's defaults (535,000 and 656,000), about 0.4 s for SHA-512. A hash
// above them fails to parse.
const (
	maxBcryptCost     = 17
	maxSHACryptRounds = 2_000_000
)

// ParseHtpasswd parses an htpasswd file, the "auth" key of ingress-nginx's auth-secret:
// "user:hash" lines. Blank lines (or only spaces and tabs) and lines starting with '#' are
// skipped, and CRLF line ends are tolerated. As in nginx, the hash ends at a second ':' (the
// rest is a comment), and when a user is listed twice the first entry wins without error; a
// later entry must parse all the same. An error is a *ParseError naming the line and user.
// A file without users parses into an empty set, which verifies no one.
func ParseHtpasswd(data []byte) (*Users, error) {
	b := newBuilder()
	for n := 1; len(data) > 0; n++ {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(bytes.Trim(line, " \t")) == 0 || line[0] == '#' {
			continue
		}
		user, field, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			return nil, &ParseError{Line: n, Err: errNoSeparator}
		}
		if bytes.IndexByte(line, '\r') >= 0 {
			return nil, &ParseError{Line: n, User: string(user), Err: errStrayCR}
		}
		if err := b.add(string(user), field); err != nil {
			return nil, &ParseError{Line: n, User: string(user), Err: err}
		}
	}
	return b.build()
}

// ParseAuthMap parses ingress-nginx's auth-secret-type "auth-map" Secret: each key a user, its
// value the hash. ingress-nginx writes the pairs as htpasswd lines for nginx, so a value is
// read as a line's hash would be: one trailing line break is dropped and text after a ':' is
// a comment. A value of several lines (which would have smuggled in more users) is an error.
// Keys are visited in sorted order, so the error reported is the same on every parse.
func ParseAuthMap(m map[string][]byte) (*Users, error) {
	b := newBuilder()
	users := make([]string, 0, len(m))
	for user := range m {
		users = append(users, user)
	}
	slices.Sort(users)
	for _, user := range users {
		v := m[user]
		v = bytes.TrimSuffix(v, []byte{'\n'})
		v = bytes.TrimSuffix(v, []byte{'\r'})
		if bytes.ContainsAny(v, "\r\n") {
			return nil, &ParseError{User: user, Err: errMultiline}
		}
		if strings.HasPrefix(user, "#") || strings.ContainsAny(user, ":\r\n") {
			return nil, &ParseError{User: user, Err: errBadUser}
		}
		if err := b.add(user, v); err != nil {
			return nil, &ParseError{User: user, Err: err}
		}
	}
	return b.build()
}

// Len returns the number of users.
func (u *Users) Len() int {
	if u == nil {
		return 0
	}
	return len(u.byName)
}

// Verify reports whether user and password match an entry. It is called once per request
// that carries credentials; a success already seen costs one HMAC-SHA256 and no allocation,
// anything else one computation of a stored hash (see Users).
func (u *Users) Verify(user, password string) bool {
	if u.Len() == 0 {
		return false
	}
	key := u.cacheKey(user, password)
	if u.cache.contains(&key) {
		return true
	}
	c, ok := u.byName[user]
	if !ok {
		u.decoy.verify([]byte(password))
		return false
	}
	if !c.verify([]byte(password)) {
		return false
	}
	u.cache.add(&key)
	return true
}

// ParseBasic parses an Authorization header value: "Basic" (any case), one or more spaces,
// then the standard base64 (padded or not) of "user:password". The user ends at the first
// ':'; the password may hold more. ok is false for another scheme, bad base64, no ':', or an
// empty user (nginx refuses those too).
func ParseBasic(authorization string) (user, password string, ok bool) {
	const scheme = "basic "
	if len(authorization) < len(scheme) || !strings.EqualFold(authorization[:len(scheme)], scheme) {
		return "", "", false
	}
	enc := strings.TrimLeft(authorization[len(scheme):], " ")
	enc = strings.TrimRight(enc, " \t")
	enc = strings.TrimRight(enc, "=") // RawStdEncoding then reads both the padded and the bare form
	// Go's decoders skip CR and LF; nginx's refuses them, and a header value holds neither.
	if enc == "" || strings.ContainsAny(enc, "\r\n") {
		return "", "", false
	}
	// Decode from and into the stack for the usual sizes: the one allocation is the string
	// the user and password are sliced from.
	var in [256]byte
	var out [192]byte
	src := append(in[:0], enc...)
	dst := out[:]
	if n := base64.RawStdEncoding.DecodedLen(len(enc)); n > len(out) {
		dst = make([]byte, n)
	}
	n, err := base64.RawStdEncoding.Decode(dst, src)
	if err != nil {
		return "", "", false
	}
	decoded := dst[:n]
	i := bytes.IndexByte(decoded, ':')
	if i <= 0 {
		return "", "", false
	}
	s := string(decoded)
	return s[:i], s[i+1:], true
}

// builder collects credentials while a file or map is parsed.
type builder struct {
	byName map[string]*credential
}

func newBuilder() *builder {
	return &builder{byName: make(map[string]*credential)}
}

// add parses one user's hash field; the first entry of a user wins.
func (b *builder) add(user string, field []byte) error {
	if user == "" {
		return errEmptyUser
	}
	// nginx ends the password field at ':'; Apache's htpasswd puts comments there.
	field, _, _ = bytes.Cut(field, []byte{':'})
	c, err := parseHash(field)
	if err != nil {
		return err
	}
	if _, dup := b.byName[user]; !dup {
		b.byName[user] = c
	}
	return nil
}

func (b *builder) build() (*Users, error) {
	u := &Users{byName: b.byName}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, errRandSource
	}
	u.macs.New = func() any { return &macState{h: hmac.New(sha256.New, key[:])} }
	var costliest *credential
	for _, c := range u.byName {
		if costliest == nil || c.work() > costliest.work() {
			costliest = c
		}
	}
	if costliest != nil {
		d, err := costliest.decoy()
		if err != nil {
			return nil, errRandSource
		}
		u.decoy = d
	}
	// Each user has one password to remember (bcrypt's 72-byte cut aside); twice the users,
	// up to the ceiling, keeps set collisions from evicting active users.
	u.cache.init(min(2*len(u.byName), maxCached))
	return u, nil
}

// macState is one HMAC-SHA256 computation's state with scratch space, pooled so that a cache
// key costs no allocation.
type macState struct {
	h   hash.Hash
	buf [64]byte
	sum [sha256.Size]byte
}

// cacheKey returns HMAC-SHA256(key, len(user) || user || password) under the set's key: the
// length prefix keeps ("ab", "c") and ("a", "bc") apart.
func (u *Users) cacheKey(user, password string) [sha256.Size]byte {
	st := u.macs.Get().(*macState)
	st.h.Reset()
	binary.BigEndian.PutUint64(st.buf[:8], uint64(len(user)))
	st.h.Write(st.buf[:8])
	writeString(st.h, &st.buf, user)
	writeString(st.h, &st.buf, password)
	st.h.Sum(st.sum[:0])
	key := st.sum
	u.macs.Put(st)
	return key
}

// writeString writes s to h through buf: a []byte(s) conversion handed to an interface method
// would escape and allocate.
func writeString(h hash.Hash, buf *[64]byte, s string) {
	for len(s) > 0 {
		n := copy(buf[:], s)
		h.Write(buf[:n])
		s = s[n:]
	}
}

// maxCached bounds the verified-password cache of one Users: 1024 keys of 32 bytes (about
// 40 KiB with bookkeeping) for the largest sets, less for small ones.
const maxCached = 1024

// cacheWays is the number of keys per set of the cache.
const cacheWays = 8

// verifiedCache remembers HMAC keys of successful verifications in a set-associative table:
// a key's set comes from its first 8 bytes (uniform, being an HMAC output), and a full set
// replaces its least recently used key. Each set has its own lock.
type verifiedCache struct {
	sets []cacheSet
}

type cacheSet struct {
	mu    sync.Mutex
	clock uint64
	used  [cacheWays]uint64 // the clock at the key's last use; 0 for an empty way
	keys  [cacheWays][sha256.Size]byte
}

func (c *verifiedCache) init(entries int) {
	c.sets = make([]cacheSet, max(1, (entries+cacheWays-1)/cacheWays))
}

func (c *verifiedCache) set(key *[sha256.Size]byte) *cacheSet {
	hi, _ := bits.Mul64(binary.LittleEndian.Uint64(key[:8]), uint64(len(c.sets)))
	return &c.sets[hi]
}

// contains reports whether key was added, and marks it used.
func (c *verifiedCache) contains(key *[sha256.Size]byte) bool {
	s := c.set(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.keys {
		// Comparing HMAC outputs needs no constant time: without the set's key a caller
		// cannot aim at one.
		if s.used[w] != 0 && s.keys[w] == *key {
			s.clock++
			s.used[w] = s.clock
			return true
		}
	}
	return false
}

// add remembers key, replacing the set's least recently used key when it is full.
func (c *verifiedCache) add(key *[sha256.Size]byte) {
	s := c.set(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	victim := 0
	for w := range s.keys {
		if s.used[w] != 0 && s.keys[w] == *key {
			victim = w // verified twice concurrently: refresh, do not duplicate
			break
		}
		if s.used[w] < s.used[victim] {
			victim = w
		}
	}
	s.clock++
	s.used[victim] = s.clock
	s.keys[victim] = *key
}

// scheme is a hash kind.
type scheme uint8

const (
	schemeBcrypt scheme = iota + 1
	schemeMD5Crypt
	schemeSHA256Crypt
	schemeSHA512Crypt
	schemeSHA
	schemeSSHA
	schemePlain
)

// credential is one parsed hash.
type credential struct {
	scheme scheme
	magic  string // MD5-crypt: "$1$" or "$apr1$"
	cost   int    // bcrypt cost, SHA-crypt rounds
	salt   []byte // MD5-crypt, SHA-crypt: as written; SSHA: decoded
	// digest is what a password's computation is compared with: bcrypt's whole hash (x/crypto
	// compares), crypt's encoded digest, SHA-1 bytes, or for {PLAIN} the SHA-256 of the
	// password, so that comparing takes the same time whatever the lengths.
	digest []byte
}

const bcryptAlphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

var bcryptEncoding = base64.NewEncoding(bcryptAlphabet).WithPadding(base64.NoPadding)

// parseHash parses one stored hash, strictly: a hash crypt(3) could never print (a salt too
// long, rounds out of range, a digest of the wrong length) would refuse every password under
// nginx, and is reported here instead.
func parseHash(f []byte) (*credential, error) {
	s := string(f)
	switch {
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"), strings.HasPrefix(s, "$2y$"):
		return parseBcrypt(s)
	case strings.HasPrefix(s, "$apr1$"):
		return parseMD5Crypt("$apr1$", s[len("$apr1$"):])
	case strings.HasPrefix(s, "$1$"):
		return parseMD5Crypt("$1$", s[len("$1$"):])
	case strings.HasPrefix(s, "$5$"):
		return parseSHACrypt(schemeSHA256Crypt, s[len("$5$"):])
	case strings.HasPrefix(s, "$6$"):
		return parseSHACrypt(schemeSHA512Crypt, s[len("$6$"):])
	case strings.HasPrefix(s, "{SHA}"):
		d, err := decodeStd(s[len("{SHA}"):])
		if err != nil || len(d) != sha1.Size {
			return nil, errSHA
		}
		return &credential{scheme: schemeSHA, digest: d}, nil
	case strings.HasPrefix(s, "{SSHA}"):
		d, err := decodeStd(s[len("{SSHA}"):])
		if err != nil || len(d) < sha1.Size {
			return nil, errSSHA
		}
		return &credential{scheme: schemeSSHA, digest: d[:sha1.Size], salt: d[sha1.Size:]}, nil
	case strings.HasPrefix(s, "{PLAIN}"):
		sum := sha256.Sum256(f[len("{PLAIN}"):])
		return &credential{scheme: schemePlain, digest: sum[:]}, nil
	}
	return nil, ErrUnsupportedHash
}

// decodeStd decodes standard base64, padded or not.
func decodeStd(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// parseBcrypt checks the whole form ("$2y$10$" + 22 salt + 31 digest characters) and the cost:
// x/crypto checks only the prefix and would compare a truncated or padded hash as given.
func parseBcrypt(s string) (*credential, error) {
	if len(s) != 60 || s[6] != '$' || strings.Trim(s[7:], bcryptAlphabet) != "" {
		return nil, errBcrypt
	}
	cost, err := strconv.Atoi(s[4:6])
	if err != nil || s[4] < '0' || s[4] > '9' {
		return nil, errBcrypt
	}
	if cost < bcrypt.MinCost || cost > maxBcryptCost {
		return nil, errBcryptCost
	}
	return &credential{scheme: schemeBcrypt, cost: cost, digest: []byte(s)}, nil
}

// parseMD5Crypt parses what follows the magic: salt (up to 8 characters), '$', 22 characters.
func parseMD5Crypt(magic, s string) (*credential, error) {
	salt, digest, ok := strings.Cut(s, "$")
	if !ok || len(salt) > 8 || len(digest) != md5CryptLen || !isCrypt64(digest) {
		return nil, errMD5Crypt
	}
	return &credential{scheme: schemeMD5Crypt, magic: magic, salt: []byte(salt), digest: []byte(digest)}, nil
}

// parseSHACrypt parses what follows "$5$" or "$6$": an optional "rounds=N$", a salt of up to
// 16 characters, '$', the digest.
func parseSHACrypt(sch scheme, s string) (*credential, error) {
	rounds := 5000
	if r, ok := strings.CutPrefix(s, "rounds="); ok {
		num, rest, ok := strings.Cut(r, "$")
		n, err := strconv.Atoi(num)
		// glibc prints rounds= back in canonical decimal, clamped to 1000..999999999; any
		// other spelling would never compare equal.
		if !ok || err != nil || strconv.Itoa(n) != num || n < 1000 || n > maxSHACryptRounds {
			return nil, errSHACryptRounds
		}
		rounds, s = n, rest
	}
	want := sha256CryptLen
	if sch == schemeSHA512Crypt {
		want = sha512CryptLen
	}
	salt, digest, ok := strings.Cut(s, "$")
	if !ok || len(salt) > 16 || len(digest) != want || !isCrypt64(digest) {
		return nil, errSHACrypt
	}
	return &credential{scheme: sch, cost: rounds, salt: []byte(salt), digest: []byte(digest)}, nil
}

func isCrypt64(s string) bool {
	return strings.Trim(s, cryptAlphabet) == ""
}

// verify reports whether password matches, comparing in constant time.
func (c *credential) verify(password []byte) bool {
	var buf [sha512CryptLen]byte
	switch c.scheme {
	case schemeBcrypt:
		return bcrypt.CompareHashAndPassword(c.digest, password) == nil
	case schemeMD5Crypt:
		return subtle.ConstantTimeCompare(md5Crypt(buf[:0], c.magic, c.salt, password), c.digest) == 1
	case schemeSHA256Crypt, schemeSHA512Crypt:
		got := shaCrypt(buf[:0], c.scheme == schemeSHA512Crypt, c.cost, c.salt, password)
		return subtle.ConstantTimeCompare(got, c.digest) == 1
	case schemeSHA:
		sum := sha1.Sum(password)
		return subtle.ConstantTimeCompare(sum[:], c.digest) == 1
	case schemeSSHA:
		h := sha1.New()
		h.Write(password)
		h.Write(c.salt)
		return subtle.ConstantTimeCompare(h.Sum(buf[:0]), c.digest) == 1
	case schemePlain:
		sum := sha256.Sum256(password)
		return subtle.ConstantTimeCompare(sum[:], c.digest) == 1
	}
	return false
}

// work estimates one verification's cost in nanoseconds of this package's reference machine;
// only the order matters (which entry the decoy imitates).
func (c *credential) work() float64 {
	switch c.scheme {
	case schemeBcrypt:
		return float64(int64(1)<<c.cost) * bcryptUnitNanos
	case schemeMD5Crypt:
		return md5CryptNanos
	case schemeSHA256Crypt:
		return float64(c.cost) * sha256RoundNanos
	case schemeSHA512Crypt:
		return float64(c.cost) * sha512RoundNanos
	}
	return 1 // SHA-1 or SHA-256 of a password: below a microsecond
}

// Measured with BenchmarkHashes (go test -bench Hashes), per unit of cost.
const (
	bcryptUnitNanos  = 56_000 // per 2^cost: 58 ms at cost 10
	md5CryptNanos    = 120_000
	sha256RoundNanos = 110
	sha512RoundNanos = 215
)

// decoy returns a credential of c's kind and cost whose salt and digest are random: verifying
// any password against it costs what a wrong password for c costs, and matches nothing.
func (c *credential) decoy() (*credential, error) {
	random := func(n int) ([]byte, error) {
		b := make([]byte, n)
		_, err := rand.Read(b)
		return b, err
	}
	randomCrypt64 := func(n int) ([]byte, error) {
		b, err := random(n)
		for i := range b {
			b[i] = cryptAlphabet[b[i]&0x3f]
		}
		return b, err
	}
	d := &credential{scheme: c.scheme, magic: c.magic, cost: c.cost}
	var err, err2 error
	switch c.scheme {
	case schemeBcrypt:
		var salt, sum []byte
		salt, err = random(16)
		sum, err2 = random(23)
		d.digest = fmt.Appendf(nil, "$2b$%02d$%s%s", c.cost,
			bcryptEncoding.EncodeToString(salt), bcryptEncoding.EncodeToString(sum))
	case schemeMD5Crypt:
		d.salt, err = randomCrypt64(8)
		d.digest, err2 = randomCrypt64(md5CryptLen)
	case schemeSHA256Crypt, schemeSHA512Crypt:
		d.salt, err = randomCrypt64(16)
		d.digest, err2 = randomCrypt64(len(c.digest))
	case schemeSHA, schemeSSHA:
		d.salt, err = random(len(c.salt))
		d.digest, err2 = random(sha1.Size)
	case schemePlain:
		d.digest, err = random(sha256.Size)
	}
	return d, errors.Join(err, err2)
}
