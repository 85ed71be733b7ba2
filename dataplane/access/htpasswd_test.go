package access

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// Vectors printed by `openssl passwd -apr1/-1/-5/-6 -salt ...` (OpenSSL 3.0) and, where
// OpenSSL refuses (an empty password for SHA-crypt) or has no such scheme (bcrypt), by glibc's
// libxcrypt through Python's crypt.crypt. The first SHA-crypt rows are from Drepper's
// specification. Passwords cover empty, one byte, several digest blocks, non-ASCII and bcrypt's
// 72-byte cut.
var hashVectors = []struct {
	password, hash string
}{
	{"Hello world!", "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"},
	{"Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"},
	{"Hello world!", "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"},
	{"", "$5$rounds=1000$s$cdjvTno7yp4OJ1Yyxn95LrCQTyxHsv3TK6lXb48P4L1"},
	{"", "$6$emptypw$TWmzQ8/uLn1BFSZ5Lkfum8lAba5vixF9Nl3Aiof.Praatq9nh0kkPuTdoVrIL6du0L6LAoadbPq.q.D7keveg/"},
	{"", "$apr1$Ab/.9z$HCqZH4QCkGtIscUjbwCA21"},
	{"", "$1$12345678$xek.CpjQUVgdf/P2N9KQf/"},
	{"a", "$5$rounds=1000$s$z5VgeXlzT.M8/EMRKo9XOcikNGiuKT9gSGajArVUrH0"},
	{"a", "$6$rounds=1000$s$Qr956wg.MR4VkDV994715AMsJortV.nSw46Z.6MKwssRNqLX2p/csvWXL3PAAy0HDUbfxpZ4.jBPpGdOlUxep1"},
	{"a", "$5$saltstringsaltst$37CelltD6iMn9nFf.xJrAnACdAdHwtWz5Z4YML7HKcB"},
	{"a", "$6$saltstringsaltst$V1bh5AHnO3DyboxHV1xFR.ZTBMQwPKb/sYKJwWCI0cb45VrOhnf0a5zVHniCe0J7RFPjPafO68RNA8if98eul1"},
	{"a", "$apr1$Ab/.9z$iDcie5F2QniYdgdiFRbRa."},
	{"a", "$1$12345678$3Uz6TyHSiGZR0yDMOX3jO0"},
	{"password", "$5$rounds=1000$s$nEGbtphtlxsTfsWNST5XxNk7CJhitu6Lbujs0YxwBn4"},
	{"password", "$6$rounds=1000$s$ih15dMz95fxoR4UE4XOx/kI3ZolBYLbZ3tmcD2WkMRpCgMlylVVtTgcBh82GEohTb.qAfqBTNpZChVABAHw8G0"},
	{"password", "$5$saltstringsaltst$Ekah6lEFydzYloW2P/P45IGa7Yv0vGRQi.McSitgqd9"},
	{"password", "$6$saltstringsaltst$6JOgtRfhXqEisnc/Nr64lml/zPnCnvtLyMVxFEVg0sI2Ph9URAKlnVjjIHOFI2r8ATszyoPTXlBwcJIQYQ0QN0"},
	{"password", "$apr1$Ab/.9z$pxgR8MujhOiE3gFJmHxrF0"},
	{"password", "$1$12345678$o2n/JiO/h5VviOInWJ4OQ/"},
	{"pass", "$apr1$abc$p2BVMETKPhAwJTvOd59Vk."},
	{"x", "$1$saltsalt$4px9i58NU2Z2/vZOUlGjq."},
	{"correct horse battery staple", "$5$rounds=1000$s$GpEjV34AjQr18L10BrMcRwx35g2aOZFgsho2imX.xS0"},
	{"correct horse battery staple", "$6$rounds=1000$s$lJwW.dn4EapsPlGD3e20gE1/1rInKDfWvdZGAci8sdY.nOI6CVIB7LhPek4l1u8m34D7tEZAVC9w3Ve/X0Qzh/"},
	{"correct horse battery staple", "$5$saltstringsaltst$wTbXaKiaW9iZ94.0kBRpTsvmaTF5d0/hyaXiYx5XQX."},
	{"correct horse battery staple", "$6$saltstringsaltst$3h7STkr0i0iXKtx9L6TPkhN5v1rUiPkJUiG7sipbycYgc02MpmEFKyRup0K0pREhLJoUsSkK7VK674mqHcID//"},
	{"correct horse battery staple", "$apr1$Ab/.9z$EF/eVnRndpgkU5UE64r3V0"},
	{"correct horse battery staple", "$1$12345678$6Y1hlBBgoOi.BbdQMriqZ1"},
	{strings.Repeat("x", 70), "$5$rounds=1000$s$P/fznfft3hZSFPHfqBpScHWq6nhGiG15Z.kSfL4MAcD"},
	{strings.Repeat("x", 70), "$6$rounds=1000$s$R/ubWq8ffiYAGwC3F1bZfPFimBHcJiFSZnejjs1AzNp.8WW2ncKUrp8WW8JQzcjFJe80nuhBbGIijL/31Pz9v/"},
	{strings.Repeat("x", 70), "$5$saltstringsaltst$Pq9ov2Vo62COYoeHnXGny2arFfqFSynnfJ9xyjs7ZX7"},
	{strings.Repeat("x", 70), "$6$saltstringsaltst$Q19Pk7QgqyH2wCETucELuaWMNtplciIgtVbE6ttvDgffR03hko23OxmKgMTh1FX62uxA5hX1a9pzzKdYOiuyy0"},
	{strings.Repeat("x", 70), "$apr1$Ab/.9z$3aGjk9fjCsxmkfmvRatIx."},
	{strings.Repeat("x", 70), "$1$12345678$8TG68lnWZTovjM6h8HQGX1"},
	{"pässwörd€", "$5$rounds=1000$s$2TFbeK1OCRCnRnIKY.saNlk7nxz1nZwXAyJNjXfARYC"},
	{"pässwörd€", "$6$rounds=1000$s$QD3/MMloN3zAHQLaHhJTaEgRn3kwX0kN3HtOPd9lnYm59TewV.euP5bYAG.bhYDy8eRUxWd.b9erQIPoUPHul."},
	{"pässwörd€", "$5$saltstringsaltst$NYd9oq5BA7eT9VK9rBS7FgYYGavmz3ZcH4jpvCBNQy7"},
	{"pässwörd€", "$6$saltstringsaltst$Rcerw42JyZBLiFU0pEAapMi8gdEG.Ko36MUq3t5fSNzzJ9ukM..nFhxIkuKwCE/wKeJsx4LjBdCLQSETHVNU8."},
	{"pässwörd€", "$apr1$Ab/.9z$idv5p5CY7CvGKpI6kme9H."},
	{"pässwörd€", "$1$12345678$iaQgWdmCdBqwUffvxkk9Y."},
	{strings.Repeat("ab", 40), "$5$rounds=1000$s$jef4pRz3n/Exsmy5HH18mnpPh90.8CwNTYo2Q81P808"},
	{strings.Repeat("ab", 40), "$6$rounds=1000$s$7Z9ekp1r0FwL.LhD58rw3TuI0xzmrY41tVoy0Y9E0nsmjFO8NtNZ75ClSeljNOrpvLGYCo9wU7hjbWiUQeE6r."},
	{strings.Repeat("ab", 40), "$5$saltstringsaltst$3H0osqXAJ.8lsCP/z4nzWBRQmCpxrQDVBUqs4d0XVl2"},
	{strings.Repeat("ab", 40), "$6$saltstringsaltst$RnWB0Rx6U4v2ZtqlIsLnusUmhNKHN5AkAzRsyRmXcyQHyl9XJLiGbBqvhDuJhdiG2IG4NI6i52BKEa89s6H080"},
	{strings.Repeat("ab", 40), "$apr1$Ab/.9z$s74gqbRRE0gpp7pbGmGga."},
	{strings.Repeat("ab", 40), "$1$12345678$MvEFzGtKVC0JwAYf0tNKF1"},
	{"secret", "$2b$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a"},
	{"secret", "$2y$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a"},
	{"secret", "$2a$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a"},
	{strings.Repeat("x", 72), "$2b$04$abcdefghijklmnopqrstuubzadhGtS2zEF.gu0yd0opP6cVzb.e0i"},
	{strings.Repeat("x", 80), "$2b$04$abcdefghijklmnopqrstuubzadhGtS2zEF.gu0yd0opP6cVzb.e0i"}, // crypt reads 72 bytes
	// {SHA} and {SSHA} as Apache's htpasswd -s and OpenLDAP's slappasswd print them.
	{"password", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="},
	{"secret", "{SSHA}" + base64.StdEncoding.EncodeToString(append(sha1Of("secret"+"salt"), "salt"...))},
	{"secret", "{SSHA}" + strings.TrimRight(base64.StdEncoding.EncodeToString(append(sha1Of("secret"+"NaCl!"), "NaCl!"...)), "=")},
	{"plain text", "{PLAIN}plain text"},
	{"", "{PLAIN}"},
}

func sha1Of(s string) []byte {
	sum := sha1.Sum([]byte(s))
	return sum[:]
}

// Each vector verifies with its password and with nothing else; a digest changed in one
// character verifies nothing.
func TestHashVectors(t *testing.T) {
	for _, v := range hashVectors {
		c, err := parseHash([]byte(v.hash))
		if err != nil {
			t.Errorf("%s: %v", v.hash, err)
			continue
		}
		if !c.verify([]byte(v.password)) {
			t.Errorf("%s: password %q does not verify", v.hash, v.password)
		}
		for _, wrong := range []string{v.password + "x", "x" + v.password, strings.ToUpper(v.password) + "!"} {
			if len(wrong) > 72 && strings.HasPrefix(v.hash, "$2") {
				continue // bcrypt reads 72 bytes: appending to a long password changes nothing
			}
			if c.verify([]byte(wrong)) {
				t.Errorf("%s: wrong password %q verifies", v.hash, wrong)
			}
		}
		last := v.hash[len(v.hash)-2]
		tampered := v.hash[:len(v.hash)-2] + string(last^1) + v.hash[len(v.hash)-1:]
		if c, err := parseHash([]byte(tampered)); err == nil && c.verify([]byte(v.password)) {
			t.Errorf("%s: tampered digest %s verifies", v.hash, tampered)
		}
	}
}

// A file in every supported format, with what nginx tolerates around the lines.
func TestParseHtpasswd(t *testing.T) {
	bc, err := bcrypt.GenerateFromPassword([]byte("bcrypt-pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	file := "# written by htpasswd\r\n" +
		"\n" +
		"alice:" + string(bc) + "\r\n" +
		"   \t\n" +
		"bob:$apr1$Ab/.9z$pxgR8MujhOiE3gFJmHxrF0:a comment, as Apache's htpasswd allows\n" +
		"carol:$1$12345678$o2n/JiO/h5VviOInWJ4OQ/\n" +
		"dave:$5$rounds=1000$s$nEGbtphtlxsTfsWNST5XxNk7CJhitu6Lbujs0YxwBn4\n" +
		"erin:$6$saltstringsaltst$6JOgtRfhXqEisnc/Nr64lml/zPnCnvtLyMVxFEVg0sI2Ph9URAKlnVjjIHOFI2r8ATszyoPTXlBwcJIQYQ0QN0\n" +
		"frank:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n" +
		"grace:{PLAIN}grace-pw\n" +
		"bob:{PLAIN}second bob entry loses\n" +
		"user with spaces:{PLAIN}spaced" // no final newline
	u, err := ParseHtpasswd([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	if u.Len() != 8 {
		t.Errorf("Len = %d, want 8", u.Len())
	}
	for _, tc := range []struct {
		user, password string
		want           bool
	}{
		{"alice", "bcrypt-pw", true},
		{"alice", "bcrypt-pw ", false},
		{"bob", "password", true},
		{"bob", "second bob entry loses", false},
		{"carol", "password", true},
		{"dave", "password", true},
		{"erin", "password", true},
		{"frank", "password", true},
		{"frank", "Password", false},
		{"grace", "grace-pw", true},
		{"user with spaces", "spaced", true},
		{"Alice", "bcrypt-pw", false}, // user names are case-sensitive, as in nginx
		{"nobody", "password", false},
		{"", "", false},
	} {
		// Twice: the second answer may come from the cache and must agree.
		for range 2 {
			if got := u.Verify(tc.user, tc.password); got != tc.want {
				t.Errorf("Verify(%q, %q) = %v, want %v", tc.user, tc.password, got, tc.want)
			}
		}
	}
}

func TestParseHtpasswdErrors(t *testing.T) {
	const good = "ok:{PLAIN}x\n"
	for _, tc := range []struct {
		name, line, user string
		want             error
	}{
		{"no separator", "justsometext", "", errNoSeparator},
		{"empty user", ":{PLAIN}x", "", errEmptyUser},
		{"DES crypt", "des:abNANd1rDfiNc", "des", ErrUnsupportedHash},
		{"empty hash", "empty:", "empty", ErrUnsupportedHash},
		{"yescrypt", "yes:$y$j9T$abcdefghijklmnop$0123456789012345678901234567890123456789012", "yes", ErrUnsupportedHash},
		{"lowercase prefix", "sha:{sha}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "sha", ErrUnsupportedHash},
		{"bcrypt 2x", "b:$2x$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a", "b", ErrUnsupportedHash},
		{"bcrypt truncated", "b:$2y$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0", "b", errBcrypt},
		{"bcrypt trailing space", "b:$2y$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a ", "b", errBcrypt},
		{"bcrypt bad char", "b:$2y$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0+", "b", errBcrypt},
		{"bcrypt cost 03", "b:$2y$03$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a", "b", errBcryptCost},
		{"bcrypt cost 18", "b:$2y$18$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a", "b", errBcryptCost},
		{"bcrypt cost +5", "b:$2y$+5$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a", "b", errBcrypt},
		{"apr1 salt of 9", "a:$apr1$123456789$pxgR8MujhOiE3gFJmHxrF0", "a", errMD5Crypt},
		{"apr1 short digest", "a:$apr1$Ab/.9z$pxgR8MujhOiE3gFJmHxrF", "a", errMD5Crypt},
		{"md5 no digest", "a:$1$12345678", "a", errMD5Crypt},
		{"sha256 digest of sha512", "s:$5$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1", "s", errSHACrypt},
		{"sha512 salt of 17", "s:$6$saltstringsaltstr$6JOgtRfhXqEisnc/Nr64lml/zPnCnvtLyMVxFEVg0sI2Ph9URAKlnVjjIHOFI2r8ATszyoPTXlBwcJIQYQ0QN0", "s", errSHACrypt},
		{"rounds below 1000", "s:$5$rounds=999$s$nEGbtphtlxsTfsWNST5XxNk7CJhitu6Lbujs0YxwBn4", "s", errSHACryptRounds},
		{"rounds above ceiling", "s:$5$rounds=2000001$s$nEGbtphtlxsTfsWNST5XxNk7CJhitu6Lbujs0YxwBn4", "s", errSHACryptRounds},
		{"rounds leading zero", "s:$5$rounds=01000$s$nEGbtphtlxsTfsWNST5XxNk7CJhitu6Lbujs0YxwBn4", "s", errSHACryptRounds},
		{"rounds not a number", "s:$5$rounds=x$s$nEGbtphtlxsTfsWNST5XxNk7CJhitu6Lbujs0YxwBn4", "s", errSHACryptRounds},
		{"SHA not base64", "s:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g!", "s", errSHA},
		{"SHA short", "s:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9", "s", errSHA},
		{"SSHA short", "s:{SSHA}W6ph5Mm5Pz8G", "s", errSSHA},
		{"stray CR", "c:{PLAIN}a\rb", "c", errStrayCR},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseHtpasswd([]byte(good + "# comment\n\n" + tc.line + "\n" + good))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v, want a *ParseError", err)
			}
			if pe.Line != 4 || pe.User != tc.user || !errors.Is(err, tc.want) {
				t.Errorf("got line %d user %q cause %v; want line 4 user %q cause %v", pe.Line, pe.User, pe.Err, tc.user, tc.want)
			}
			if _, hash, ok := strings.Cut(tc.line, ":"); ok && len(hash) > 3 && strings.Contains(err.Error(), hash) {
				t.Errorf("error %q shows the hash", err)
			}
			if !hasSeparator(tc.line) && strings.Contains(err.Error(), tc.line) {
				t.Errorf("error %q shows the line", err)
			}
		})
	}
}

func hasSeparator(line string) bool { return strings.Contains(line, ":") }

// The user is quoted in errors: a user name cannot forge a log line.
func TestParseErrorQuotesUser(t *testing.T) {
	_, err := ParseHtpasswd([]byte("ev\x1b[31mil:nope\n"))
	if err == nil || strings.ContainsRune(err.Error(), '\x1b') {
		t.Errorf("error %q", err)
	}
	if want := `htpasswd line 1, user "ev\x1b[31mil": ` + ErrUnsupportedHash.Error(); err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

func TestParseAuthMap(t *testing.T) {
	u, err := ParseAuthMap(map[string][]byte{
		"alice": []byte("$apr1$Ab/.9z$pxgR8MujhOiE3gFJmHxrF0\n"), // as `htpasswd -n` prints it
		"bob":   []byte("{PLAIN}bob-pw\r\n"),
		"carol": []byte("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=:comment"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if u.Len() != 3 || !u.Verify("alice", "password") || !u.Verify("bob", "bob-pw") ||
		!u.Verify("carol", "password") || u.Verify("alice", "bob-pw") {
		t.Errorf("auth-map users do not verify as written")
	}
	for _, tc := range []struct {
		name string
		m    map[string][]byte
		user string
		want error
	}{
		{"second line smuggles a user", map[string][]byte{"a": []byte("{PLAIN}x\nmallory:{PLAIN}y")}, "a", errMultiline},
		{"colon in key", map[string][]byte{"a:b": []byte("{PLAIN}x")}, "a:b", errBadUser},
		{"comment key", map[string][]byte{"#a": []byte("{PLAIN}x")}, "#a", errBadUser},
		{"empty key", map[string][]byte{"": []byte("{PLAIN}x")}, "", errEmptyUser},
		{"unsupported", map[string][]byte{"a": []byte("{PLAIN}x"), "b": []byte("abNANd1rDfiNc")}, "b", ErrUnsupportedHash},
	} {
		_, err := ParseAuthMap(tc.m)
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Line != 0 || pe.User != tc.user || !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want user %q cause %v", tc.name, err, tc.user, tc.want)
		}
	}
}

func TestEmptySet(t *testing.T) {
	for _, data := range []string{"", "\n\n", "# nobody\n"} {
		u, err := ParseHtpasswd([]byte(data))
		if err != nil || u.Len() != 0 || u.Verify("", "") || u.Verify("a", "b") {
			t.Errorf("%q: %v, Len %d", data, err, u.Len())
		}
	}
	var nilUsers *Users
	if nilUsers.Len() != 0 || nilUsers.Verify("a", "b") {
		t.Error("nil *Users verifies")
	}
}

// The decoy an unknown user is checked against has the set's most expensive kind and cost,
// and matches no password, not even the one of the entry it imitates.
func TestDecoy(t *testing.T) {
	bc5, _ := bcrypt.GenerateFromPassword([]byte("pw"), 5)
	bc4, _ := bcrypt.GenerateFromPassword([]byte("pw"), 4)
	for _, tc := range []struct {
		name   string
		file   string
		scheme scheme
		cost   int
	}{
		{"bcrypt over everything", "a:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\nb:" + string(bc4) + "\nc:" + string(bc5) +
			"\nd:$apr1$Ab/.9z$pxgR8MujhOiE3gFJmHxrF0\ne:$6$rounds=1000$s$ih15dMz95fxoR4UE4XOx/kI3ZolBYLbZ3tmcD2WkMRpCgMlylVVtTgcBh82GEohTb.qAfqBTNpZChVABAHw8G0\n",
			schemeBcrypt, 5},
		{"SHA-512 at 5000 rounds over MD5-crypt", "d:$apr1$Ab/.9z$pxgR8MujhOiE3gFJmHxrF0\ne:$6$saltstringsaltst$6JOgtRfhXqEisnc/Nr64lml/zPnCnvtLyMVxFEVg0sI2Ph9URAKlnVjjIHOFI2r8ATszyoPTXlBwcJIQYQ0QN0\n",
			schemeSHA512Crypt, 5000},
		{"MD5-crypt over SHA-crypt at 1000 rounds", "d:$apr1$Ab/.9z$pxgR8MujhOiE3gFJmHxrF0\ne:$5$rounds=1000$s$nEGbtphtlxsTfsWNST5XxNk7CJhitu6Lbujs0YxwBn4\n",
			schemeMD5Crypt, 0},
	} {
		u, err := ParseHtpasswd([]byte(tc.file))
		if err != nil {
			t.Fatal(err)
		}
		if u.decoy.scheme != tc.scheme || u.decoy.cost != tc.cost {
			t.Errorf("%s: decoy scheme %d cost %d, want %d cost %d", tc.name, u.decoy.scheme, u.decoy.cost, tc.scheme, tc.cost)
		}
		for _, pw := range []string{"pw", "password", ""} {
			if u.decoy.verify([]byte(pw)) {
				t.Errorf("%s: decoy verifies %q", tc.name, pw)
			}
		}
		if u.decoy.scheme == schemeBcrypt {
			if cost, err := bcrypt.Cost(u.decoy.digest); err != nil || cost != tc.cost {
				t.Errorf("%s: decoy is not a bcrypt hash of cost %d: %v", tc.name, tc.cost, err)
			}
		}
	}
}

// Only successes are remembered, under a key that is the set's own, and the cache stays
// within its bound however many users succeed.
func TestVerifyCache(t *testing.T) {
	var file bytes.Buffer
	const users = 3000
	for i := range users {
		fmt.Fprintf(&file, "u%d:{PLAIN}p%d\n", i, i)
	}
	u, err := ParseHtpasswd(file.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if got := len(u.cache.sets) * cacheWays; got != maxCached {
		t.Fatalf("cache of %d entries, want %d", got, maxCached)
	}
	if u.Verify("u1", "wrong") || u.Verify("nobody", "p1") || cached(u) != 0 {
		t.Fatalf("a failure was cached (%d entries)", cached(u))
	}
	if !u.Verify("u1", "p1") || cached(u) != 1 {
		t.Fatalf("a success was not cached (%d entries)", cached(u))
	}
	key := u.cacheKey("u1", "p1")
	if !u.cache.contains(&key) {
		t.Fatal("the success's key is not in the cache")
	}
	// The same user and password under another set's key: another cache key.
	other, _ := ParseHtpasswd([]byte("u1:{PLAIN}p1\n"))
	if other.cacheKey("u1", "p1") == key {
		t.Error("two sets share a cache key")
	}
	// Length-prefixed: ("u1", "p1") and ("u", "1p1") differ.
	if u.cacheKey("u", "1p1") == key {
		t.Error("user and password boundaries collide")
	}
	for i := range users {
		if !u.Verify(fmt.Sprintf("u%d", i), fmt.Sprintf("p%d", i)) {
			t.Fatalf("u%d does not verify", i)
		}
	}
	if n := cached(u); n > maxCached || n < maxCached*3/4 {
		t.Errorf("%d entries cached after %d successes, want close to and at most %d", n, users, maxCached)
	}
	// A small set gets a small cache.
	if got := len(other.cache.sets); got != 1 {
		t.Errorf("one user: %d cache sets, want 1", got)
	}
}

func cached(u *Users) (n int) {
	for i := range u.cache.sets {
		for _, used := range u.cache.sets[i].used {
			if used != 0 {
				n++
			}
		}
	}
	return n
}

func TestParseBasic(t *testing.T) {
	enc := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		header, user, password string
		ok                     bool
	}{
		{"Basic " + enc("alice:secret"), "alice", "secret", true},
		{"basic " + enc("alice:secret"), "alice", "secret", true},
		{"BASIC   " + enc("alice:secret") + " ", "alice", "secret", true},
		{"Basic " + strings.TrimRight(enc("alice:secre"), "="), "alice", "secre", true},
		{"Basic " + enc("alice:pass:with:colons"), "alice", "pass:with:colons", true},
		{"Basic " + enc("alice:"), "alice", "", true},
		{"Basic " + enc("ünï:cödé"), "ünï", "cödé", true},
		{"Basic " + enc("u:"+strings.Repeat("p", 500)), "u", strings.Repeat("p", 500), true},
		{"Basic " + enc(":secret"), "", "", false},
		{"Basic " + enc("nocolon"), "", "", false},
		{"Basic ", "", "", false},
		{"Basic", "", "", false},
		{"Basic" + enc("alice:secret"), "", "", false},
		{"Basic\t" + enc("alice:secret"), "", "", false},
		{"Bearer " + enc("alice:secret"), "", "", false},
		{"Basic !!!!", "", "", false},
		{"Basic " + enc("alice:secret")[:5], "", "", false},
		{"Basic YWxp\nY2U6c2VjcmV0", "", "", false},
		{"", "", "", false},
	} {
		user, password, ok := ParseBasic(tc.header)
		if user != tc.user || password != tc.password || ok != tc.ok {
			t.Errorf("ParseBasic(%q) = %q, %q, %v; want %q, %q, %v", tc.header, user, password, ok, tc.user, tc.password, tc.ok)
		}
	}
}

// A verified client's requests cost no allocation; reading its header costs one.
func TestVerifyAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts under the race detector are its own")
	}
	bc, _ := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	u, err := ParseHtpasswd([]byte("alice:" + string(bc) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !u.Verify("alice", "secret") {
		t.Fatal("alice does not verify")
	}
	long := strings.Repeat("long password ", 20)
	header := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:secret"))
	for _, tc := range []struct {
		name string
		max  float64
		f    func()
	}{
		{"cached Verify", 0, func() { u.Verify("alice", "secret") }},
		{"cache key of a long password", 0, func() { u.cacheKey("alice", long) }},
		{"ParseBasic", 1, func() { ParseBasic(header) }},
	} {
		if got := testing.AllocsPerRun(200, tc.f); got > tc.max {
			t.Errorf("%s: %v allocations, want at most %v", tc.name, got, tc.max)
		}
	}
}

func BenchmarkVerifyCached(b *testing.B) {
	bc, _ := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.DefaultCost)
	u, err := ParseHtpasswd([]byte("alice:" + string(bc) + "\n"))
	if err != nil || !u.Verify("alice", "secret") {
		b.Fatal("alice does not verify", err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			u.Verify("alice", "secret")
		}
	})
}

func BenchmarkParseBasic(b *testing.B) {
	header := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:correct horse battery staple"))
	b.ReportAllocs()
	for b.Loop() {
		ParseBasic(header)
	}
}

// BenchmarkHashes measures one verification per kind: the cost of a request whose password is
// not (yet) cached, and the figures behind credential.work.
func BenchmarkHashes(b *testing.B) {
	bc, _ := bcrypt.GenerateFromPassword([]byte("password"), bcrypt.DefaultCost)
	for _, h := range []string{
		string(bc),
		"$apr1$Ab/.9z$pxgR8MujhOiE3gFJmHxrF0",
		"$5$saltstringsaltst$Ekah6lEFydzYloW2P/P45IGa7Yv0vGRQi.McSitgqd9",
		"$6$saltstringsaltst$6JOgtRfhXqEisnc/Nr64lml/zPnCnvtLyMVxFEVg0sI2Ph9URAKlnVjjIHOFI2r8ATszyoPTXlBwcJIQYQ0QN0",
		"{SSHA}" + base64.StdEncoding.EncodeToString(append(sha1Of("password"+"salt"), "salt"...)),
	} {
		c, err := parseHash([]byte(h))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(h[:strings.IndexAny(h[1:], "$}")+2], func(b *testing.B) {
			for b.Loop() {
				if !c.verify([]byte("password")) {
					b.Fatal("does not verify")
				}
			}
		})
	}
}
