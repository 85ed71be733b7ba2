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

// FuzzParseHtpasswd checks three things per input. Parsing data as a file never panics, fails
// with a *ParseError pointing at a line that exists, and on success holds one entry per
// distinct user, of which the {PLAIN} ones verify with their text. A file the test writes from
// the input (user names from data's lines, passwords from password, hash kinds from kinds)
// parses, and every user verifies with its password and not another. That file with an
// unparseable line added fails, naming that line.
func FuzzParseHtpasswd(f *testing.F) {
	f.Add([]byte("alice:{PLAIN}x\nbob:$apr1$Ab/.9z$pxgR8MujhOiE3gFJmHxrF0\n"), "pw", uint64(0x1234567))
	f.Add([]byte("# c\r\n\r\nalice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=:note\r\nalice:{PLAIN}y"), "", uint64(0))
	f.Add([]byte("x:$5$rounds=1000$s$nEGbtphtlxsTfsWNST5XxNk7CJhitu6Lbujs0YxwBn4\n:{PLAIN}\nnocolon\n"), "p:w\n", uint64(7))
	f.Add([]byte("d:$2y$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a\ne:abNANd1rDfiNc"), "ünï", uint64(1<<63))
	f.Fuzz(func(t *testing.T, data []byte, password string, kinds uint64) {
		checkArbitraryFile(t, data)
		if len(data) > 512 || len(password) > 200 {
			return // the written file hashes each password: keep executions quick
		}
		file, want := writeFile(t, data, password, kinds)
		u, err := ParseHtpasswd(file)
		if err != nil {
			t.Fatalf("the written file does not parse: %v\n%q", err, file)
		}
		if u.Len() != len(want) {
			t.Fatalf("Len = %d, want %d", u.Len(), len(want))
		}
		for user, pw := range want {
			if !u.Verify(user, pw) {
				t.Fatalf("%q does not verify with %q\n%q", user, pw, file)
			}
			if wrong := pw + "!"; len(wrong) <= 72 && u.Verify(user, wrong) {
				t.Fatalf("%q verifies with %q", user, wrong)
			}
		}
		lines := bytes.Count(file, []byte{'\n'}) + 1
		for i, bad := range []string{"no separator", "bad:abNANd1rDfiNc", "bad:$apr1$123456789$pxgR8MujhOiE3gFJmHxrF0", "bad:$7$x", ":{PLAIN}x"} {
			_, err := ParseHtpasswd(append(append(bytes.Clone(file), '\n'), bad...))
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line != lines+1 {
				t.Fatalf("unparseable line %d (%q) after %d lines: error %v", i, bad, lines, err)
			}
		}
	})
}

// checkArbitraryFile parses data and checks what holds whatever it is.
func checkArbitraryFile(t *testing.T, data []byte) {
	u, err := ParseHtpasswd(data)
	lines := strings.Split(string(data), "\n")
	if err != nil {
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Line < 1 || pe.Line > len(lines) || !isCause(pe.Err) {
			t.Fatalf("error %#v", err)
		}
		line := strings.TrimSuffix(lines[pe.Line-1], "\r")
		if user, _, ok := strings.Cut(line, ":"); ok && user != pe.User {
			t.Fatalf("error names user %q, line %d has %q", pe.User, pe.Line, user)
		}
		return
	}
	// Every line that is not blank or a comment made (or repeated) a user.
	first := map[string]string{}
	for _, line := range lines {
		line = strings.TrimSuffix(line, "\r")
		if strings.Trim(line, " \t") == "" || line[0] == '#' {
			continue
		}
		user, field, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("line %q without ':' parsed", line)
		}
		if _, dup := first[user]; !dup {
			first[user] = field
		}
	}
	if u.Len() != len(first) {
		t.Fatalf("Len = %d, %d distinct users", u.Len(), len(first))
	}
	for user, field := range first {
		field, _, _ = strings.Cut(field, ":")
		if plain, ok := strings.CutPrefix(field, "{PLAIN}"); ok && !u.Verify(user, plain) {
			t.Fatalf("%q does not verify with its {PLAIN} %q", user, plain)
		}
	}
}

func isCause(err error) bool {
	for _, cause := range []error{ErrUnsupportedHash, errNoSeparator, errEmptyUser, errStrayCR,
		errBcrypt, errBcryptCost, errMD5Crypt, errSHACrypt, errSHACryptRounds, errSHA, errSSHA} {
		if err == cause {
			return true
		}
	}
	return false
}

// writeFile writes an htpasswd file of up to 8 users named after data's lines, each with a
// password derived from password and a hash of the kind kinds picks, with comments, blank
// lines, CRLF and repeated users mixed in. It returns the file and each user's password (the
// first entry's, as a repeated user keeps its first).
func writeFile(t *testing.T, data []byte, password string, kinds uint64) ([]byte, map[string]string) {
	var file bytes.Buffer
	want := map[string]string{}
	for i, name := range bytes.SplitN(data, []byte{'\n'}, 8) {
		user := strings.Map(func(r rune) rune {
			if r == ':' || r == '\r' {
				return -1
			}
			return r
		}, string(name))
		if strings.Trim(user, " \t") == "" || user[0] == '#' {
			user = fmt.Sprintf("u%d%s", i, user)
		}
		pw := fmt.Sprintf("%s%d", password, i)
		kind := kinds >> (4 * i) & 0xf
		eol := "\n"
		if kind&8 != 0 {
			eol = "\r\n"
			file.WriteString("# comment" + eol + eol)
		}
		file.WriteString(user + ":" + hashFor(t, kind&7, pw) + eol)
		if _, dup := want[user]; !dup {
			want[user] = pw
		}
	}
	return file.Bytes(), want
}

// hashFor returns a stored hash of pw. {PLAIN}, {SHA} and {SSHA} come from the standard
// library and bcrypt from x/crypto; the crypt(3) kinds from this package (their correctness is
// TestHashVectors's). A password {PLAIN} cannot hold (a ':' ends the field) gets {SHA}.
func hashFor(t *testing.T, kind uint64, pw string) string {
	switch kind {
	case 0:
		if !strings.ContainsAny(pw, ":\r\n") {
			return "{PLAIN}" + pw
		}
		fallthrough
	case 1:
		sum := sha1.Sum([]byte(pw))
		return "{SHA}" + base64.StdEncoding.EncodeToString(sum[:])
	case 2:
		salted := sha1.Sum([]byte(pw + "NaCl"))
		return "{SSHA}" + base64.StdEncoding.EncodeToString(append(salted[:], "NaCl"...))
	case 3:
		return "$apr1$fuzz$" + string(md5Crypt(nil, "$apr1$", []byte("fuzz"), []byte(pw)))
	case 4:
		return "$1$$" + string(md5Crypt(nil, "$1$", nil, []byte(pw)))
	case 5:
		return "$5$rounds=1000$saltsaltsaltsalt$" + string(shaCrypt(nil, false, 1000, []byte("saltsaltsaltsalt"), []byte(pw)))
	case 6:
		return "$6$rounds=1000$s$" + string(shaCrypt(nil, true, 1000, []byte("s"), []byte(pw)))
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if errors.Is(err, bcrypt.ErrPasswordTooLong) {
		return hashFor(t, 1, pw)
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Replace(string(h), "$2a$", "$2y$", 1)
}

// FuzzParseBasic: any header value parses without panic, and what parses is a non-empty user
// without ':' that survives a round trip; a header the test writes, in any case and spacing,
// parses back to its user and password (split at the first ':').
func FuzzParseBasic(f *testing.F) {
	f.Add("Basic YWxpY2U6c2VjcmV0", "alice", "secret", uint8(0))
	f.Add("basic   YWxpY2U6c2VjcmV0==", "bob", "p:w", uint8(3))
	f.Add("Basic OnNlY3JldA", "", "secret", uint8(1))
	f.Add("Basic \xff\xfe", "ü", "", uint8(7))
	f.Fuzz(func(t *testing.T, header, user, password string, style uint8) {
		if u, p, ok := ParseBasic(header); ok {
			if u == "" || strings.Contains(u, ":") {
				t.Fatalf("ParseBasic(%q) gave user %q", header, u)
			}
			again := "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p))
			if u2, p2, ok := ParseBasic(again); !ok || u2 != u || p2 != p {
				t.Fatalf("round trip of %q, %q gave %q, %q, %v", u, p, u2, p2, ok)
			}
		} else if u != "" || p != "" {
			t.Fatalf("ParseBasic(%q) not ok but gave %q, %q", header, u, p)
		}

		scheme := []string{"Basic", "basic", "BASIC", "bAsIc"}[style&3]
		spaces := strings.Repeat(" ", 1+int(style>>2&3))
		enc := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
		if style&16 != 0 {
			enc = strings.TrimRight(enc, "=")
		}
		u, p, ok := ParseBasic(scheme + spaces + enc)
		// The user ends at the first ':', wherever the test put it.
		wantUser, wantPassword, _ := strings.Cut(user+":"+password, ":")
		if ok != (wantUser != "") || ok && (u != wantUser || p != wantPassword) {
			t.Fatalf("ParseBasic of %q, %q gave %q, %q, %v", user, password, u, p, ok)
		}
	})
}
