package access

import (
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
)

// The crypt(3) digests htpasswd files carry besides bcrypt: MD5-crypt (Poul-Henning Kamp's
// "$1$", and Apache's "$apr1$", the same algorithm under another magic) and Ulrich Drepper's
// SHA-crypt ("$5$" SHA-256, "$6$" SHA-512). The standard library has neither, and x/crypto
// only bcrypt. Both functions return the encoded digest exactly as crypt(3) prints it after
// the last '$', so a stored hash is checked the way nginx checks it: crypt's output compared
// with the file's text.

// cryptAlphabet is crypt(3)'s base64 alphabet; it is not RFC 4648's, and crypt encodes
// 24-bit groups least significant 6 bits first.
const cryptAlphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// group names three digest bytes packed into 24 bits (b2 highest) and how many characters of
// the packed value are written; an index of -1 stands for a zero byte.
type group struct {
	b2, b1, b0 int8
	n          int8
}

// The byte orders come from the reference implementations (FreeBSD md5crypt.c, Drepper's
// sha256crypt.c and sha512crypt.c); they interleave the digest and are not derivable from a
// simple rule, so they are spelled out.
var (
	md5Order = []group{
		{0, 6, 12, 4}, {1, 7, 13, 4}, {2, 8, 14, 4}, {3, 9, 15, 4}, {4, 10, 5, 4}, {-1, -1, 11, 2},
	}
	sha256Order = []group{
		{0, 10, 20, 4}, {21, 1, 11, 4}, {12, 22, 2, 4}, {3, 13, 23, 4}, {24, 4, 14, 4},
		{15, 25, 5, 4}, {6, 16, 26, 4}, {27, 7, 17, 4}, {18, 28, 8, 4}, {9, 19, 29, 4},
		{-1, 31, 30, 3},
	}
	sha512Order = []group{
		{0, 21, 42, 4}, {22, 43, 1, 4}, {44, 2, 23, 4}, {3, 24, 45, 4}, {25, 46, 4, 4},
		{47, 5, 26, 4}, {6, 27, 48, 4}, {28, 49, 7, 4}, {50, 8, 29, 4}, {9, 30, 51, 4},
		{31, 52, 10, 4}, {53, 11, 32, 4}, {12, 33, 54, 4}, {34, 55, 13, 4}, {56, 14, 35, 4},
		{15, 36, 57, 4}, {37, 58, 16, 4}, {59, 17, 38, 4}, {18, 39, 60, 4}, {40, 61, 19, 4},
		{62, 20, 41, 4}, {-1, -1, 63, 2},
	}
)

// Encoded digest lengths, as they follow the last '$' of a stored hash.
const (
	md5CryptLen    = 22
	sha256CryptLen = 43
	sha512CryptLen = 86
)

// appendCrypt64 appends digest encoded in crypt(3)'s base64 in the given byte order.
func appendCrypt64(dst, digest []byte, order []group) []byte {
	at := func(i int8) uint32 {
		if i < 0 {
			return 0
		}
		return uint32(digest[i])
	}
	for _, g := range order {
		w := at(g.b2)<<16 | at(g.b1)<<8 | at(g.b0)
		for range g.n {
			dst = append(dst, cryptAlphabet[w&0x3f])
			w >>= 6
		}
	}
	return dst
}

// md5Crypt appends the 22-character MD5-crypt digest of password under magic ("$1$" or
// "$apr1$") and salt (at most 8 bytes, no '$'; the caller has checked).
func md5Crypt(dst []byte, magic string, salt, password []byte) []byte {
	var final [md5.Size]byte
	alt := md5.New()
	alt.Write(password)
	alt.Write(salt)
	alt.Write(password)
	alt.Sum(final[:0])

	h := md5.New()
	h.Write(password)
	h.Write([]byte(magic))
	h.Write(salt)
	for n := len(password); n > 0; n -= md5.Size {
		h.Write(final[:min(n, md5.Size)])
	}
	// The reference code clears final here and then, for each set bit of the length, feeds
	// final's first byte, which is therefore a zero byte.
	for n := len(password); n != 0; n >>= 1 {
		if n&1 != 0 {
			h.Write([]byte{0})
		} else {
			h.Write(password[:1])
		}
	}
	h.Sum(final[:0])

	// A thousand rounds, to slow down guessing (1995's notion of slow).
	for i := range 1000 {
		h.Reset()
		if i&1 != 0 {
			h.Write(password)
		} else {
			h.Write(final[:])
		}
		if i%3 != 0 {
			h.Write(salt)
		}
		if i%7 != 0 {
			h.Write(password)
		}
		if i&1 != 0 {
			h.Write(final[:])
		} else {
			h.Write(password)
		}
		h.Sum(final[:0])
	}
	return appendCrypt64(dst, final[:], md5Order)
}

// shaCrypt appends the SHA-crypt digest of password: SHA-256 ("$5$", 43 characters) when
// sha512 is false, SHA-512 ("$6$", 86 characters) when true. salt is at most 16 bytes and
// rounds within the specification's range; the caller has checked both.
func shaCrypt(dst []byte, sha512Variant bool, rounds int, salt, password []byte) []byte {
	newHash, order := sha256.New, sha256Order
	if sha512Variant {
		newHash, order = sha512.New, sha512Order
	}
	h := newHash()
	size := h.Size()

	// Digest B: password, salt, password.
	h.Write(password)
	h.Write(salt)
	h.Write(password)
	b := h.Sum(make([]byte, 0, size))

	// Digest A: password, salt, B stretched over the password's length, then per bit of
	// that length (lowest first) B for a one and the password for a zero.
	h.Reset()
	h.Write(password)
	h.Write(salt)
	n := len(password)
	for ; n > size; n -= size {
		h.Write(b)
	}
	h.Write(b[:n])
	for n := len(password); n > 0; n >>= 1 {
		if n&1 != 0 {
			h.Write(b)
		} else {
			h.Write(password)
		}
	}
	c := h.Sum(make([]byte, 0, size))

	// P: the digest of the password repeated once per byte of it, stretched to its length.
	h.Reset()
	for range len(password) {
		h.Write(password)
	}
	p := stretch(h.Sum(b[:0]), len(password))

	// S: the digest of the salt repeated 16 + A[0] times, stretched to the salt's length.
	h.Reset()
	for range 16 + int(c[0]) {
		h.Write(salt)
	}
	s := stretch(h.Sum(b[:0]), len(salt))

	for i := range rounds {
		h.Reset()
		if i&1 != 0 {
			h.Write(p)
		} else {
			h.Write(c)
		}
		if i%3 != 0 {
			h.Write(s)
		}
		if i%7 != 0 {
			h.Write(p)
		}
		if i&1 != 0 {
			h.Write(c)
		} else {
			h.Write(p)
		}
		c = h.Sum(c[:0])
	}
	return appendCrypt64(dst, c, order)
}

// stretch returns n bytes made of digest repeated (and cut), as SHA-crypt's P and S sequences.
func stretch(digest []byte, n int) []byte {
	out := make([]byte, n)
	for i := 0; i < n; i += len(digest) {
		copy(out[i:], digest)
	}
	return out
}
