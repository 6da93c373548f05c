package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/storage"
)

// tokenFuzzSecret and tokenFuzzNow fix FuzzVerifyToken's key and clock, so
// that its seeds, and any failing inputs saved under testdata, mean the
// same on every run.
var (
	tokenFuzzSecret = []byte("token fuzz secret, for tests only")
	tokenFuzzNow    = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
)

// tokenFuzzLeeway is the clock skew Verify allows on exp.
const tokenFuzzLeeway = 5 * time.Second

// tokenFuzzAuth returns an Authenticator for tokenFuzzSecret whose clock
// reads at.
func tokenFuzzAuth(at time.Time) *Authenticator {
	a := NewAuthenticator(tokenFuzzSecret)
	a.now = func() time.Time { return at }
	return a
}

// tokenFuzzSign returns the JWT of a header and a payload (raw JSON),
// signed with HMAC-SHA256, or HMAC-SHA512 if sha512Sig, under key.
func tokenFuzzSign(key []byte, header, payload string, sha512Sig bool) string {
	enc := base64.RawURLEncoding
	input := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	h := sha256.New
	if sha512Sig {
		h = sha512.New
	}
	mac := hmac.New(h, key)
	mac.Write([]byte(input))
	return input + "." + enc.EncodeToString(mac.Sum(nil))
}

// FuzzVerifyToken feeds arbitrary strings to Authenticator.Verify. It must
// never panic; a token it accepts must be signed with the key (checked
// here with HMAC-SHA256 independently of the JWT library), carry alg HS256
// in its header, a subject that is a valid user id and an expiry in the
// future (within the allowed skew); and it must be byte for byte one of
// the properly signed seeds: no mutation of a valid token is accepted.
func FuzzVerifyToken(f *testing.F) {
	a := tokenFuzzAuth(tokenFuzzNow)
	mint := func(user string, admin bool, at time.Time, ttl time.Duration) string {
		tok, err := tokenFuzzAuth(at).Mint(user, admin, ttl)
		if err != nil {
			f.Fatalf("Mint(%q, %v, %v): %v", user, admin, ttl, err)
		}
		return tok
	}
	exp := tokenFuzzNow.Add(time.Hour).Unix()
	payload := func(extra string) string {
		return `{"sub":"alice","exp":` + strconv.FormatInt(exp, 10) + extra + `}`
	}
	const hs256 = `{"alg":"HS256","typ":"JWT"}`
	sign := func(header, payload string) string {
		return tokenFuzzSign(a.key, header, payload, false)
	}
	alice := mint("alice", false, tokenFuzzNow, time.Hour)

	type seed struct {
		name   string
		token  string
		accept bool
	}
	seeds := []seed{
		{"valid", alice, true},
		{"valid admin", mint("root", true, tokenFuzzNow, MaxTokenTTL), true},
		{"valid email subject", mint("bob@example.com", false, tokenFuzzNow.Add(-time.Minute), 2*time.Minute), true},
		{"expired within the skew", mint("carol", false, tokenFuzzNow.Add(-time.Hour-3*time.Second), time.Hour), true},
		{"expired", mint("alice", false, tokenFuzzNow.Add(-2*time.Hour), time.Hour), false},
		{"hand-signed", sign(hs256, payload("")), true},
		{"duplicate sub", sign(hs256, `{"sub":"alice","sub":"root","exp":`+strconv.FormatInt(exp, 10)+`}`), true},
		{"no exp", sign(hs256, `{"sub":"alice"}`), false},
		// The JWT library reads a NumericDate from a JSON string too.
		{"exp as string", sign(hs256, `{"sub":"alice","exp":"`+strconv.FormatInt(exp, 10)+`"}`), true},
		{"exp huge", sign(hs256, `{"sub":"alice","exp":1e300}`), false},
		{"exp NaN", sign(hs256, `{"sub":"alice","exp":NaN}`), false},
		{"not before in the future", sign(hs256, payload(`,"nbf":`+strconv.FormatInt(exp-60, 10))), false},
		{"adm as string", sign(hs256, payload(`,"adm":"yes"`)), false},
		{"empty sub", sign(hs256, `{"sub":"","exp":`+strconv.FormatInt(exp, 10)+`}`), false},
		{"bad sub", sign(hs256, `{"sub":"alice smith","exp":`+strconv.FormatInt(exp, 10)+`}`), false},
		{"long sub", sign(hs256, `{"sub":"`+strings.Repeat("a", 65)+`","exp":`+strconv.FormatInt(exp, 10)+`}`), false},
		{"huge sub", sign(hs256, `{"sub":"`+strings.Repeat("a", 4<<10)+`","exp":`+strconv.FormatInt(exp, 10)+`}`), false},
		{"alg none", strings.Join(strings.Split(sign(`{"alg":"none","typ":"JWT"}`, payload("")), ".")[:2], ".") + ".", false},
		{"alg none signed", sign(`{"alg":"none"}`, payload("")), false},
		{"alg RS256", sign(`{"alg":"RS256","typ":"JWT"}`, payload("")), false},
		{"alg HS512", tokenFuzzSign(a.key, `{"alg":"HS512","typ":"JWT"}`, payload(""), true), false},
		{"alg hs256", sign(`{"alg":"hs256"}`, payload("")), false},
		{"no alg", sign(`{"typ":"JWT"}`, payload("")), false},
		{"other key", tokenFuzzSign([]byte("another key"), hs256, payload(""), false), false},
		{"raw secret as key", tokenFuzzSign(tokenFuzzSecret, hs256, payload(""), false), false},
		{"payload not an object", sign(hs256, `[1]`), false},
		{"header not JSON", sign(`{"alg":"HS256"`, payload("")), false},
		{"empty", "", false},
		{"dots", "..", false},
		{"garbage", "not a token", false},
		{"four parts", alice + ".x", false},
		{"padded", alice + "=", false},
		{"huge", strings.Repeat("A", 8<<10) + "." + strings.Repeat("B", 1<<10) + ".", false},
	}
	valid := make(map[string]bool)
	for _, s := range seeds {
		_, err := a.Verify(s.token)
		if (err == nil) != s.accept {
			f.Fatalf("Verify(%s seed %.200q): got error %v, want accepted %v", s.name, s.token, err, s.accept)
		}
		if s.accept {
			valid[s.token] = true
		}
		f.Add(s.token)
	}

	f.Fuzz(func(t *testing.T, token string) {
		id, err := a.Verify(token)
		if err != nil {
			if id != (Identity{}) {
				t.Fatalf("Verify(%q) = %+v, %v; want a zero Identity with the error", token, id, err)
			}
			return
		}
		if !valid[token] {
			t.Fatalf("Verify(%q) accepted a token that is not one of the signed seeds: user %q, expires %v",
				token, id.User, id.Expires)
		}
		parts := strings.Split(token, ".")
		if len(parts) != 3 {
			t.Fatalf("Verify(%q) accepted a token of %d parts, want 3", token, len(parts))
		}
		hb, err := base64.RawURLEncoding.Strict().DecodeString(parts[0])
		if err != nil {
			t.Fatalf("Verify(%q) accepted a header that is not base64url: %v", token, err)
		}
		var header struct {
			Alg string `json:"alg"`
		}
		if err := json.Unmarshal(hb, &header); err != nil || header.Alg != "HS256" {
			t.Fatalf("Verify(%q) accepted header %s (alg %q, error %v), want alg HS256", token, hb, header.Alg, err)
		}
		sig, err := base64.RawURLEncoding.Strict().DecodeString(parts[2])
		mac := hmac.New(sha256.New, a.key)
		mac.Write([]byte(parts[0] + "." + parts[1]))
		if err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
			t.Fatalf("Verify(%q) accepted a signature that is not the HMAC-SHA256 of the token (decode error %v)", token, err)
		}
		if err := storage.ValidateUserID(id.User); err != nil {
			t.Fatalf("Verify(%q) accepted subject %q: %v", token, id.User, err)
		}
		if !id.Expires.After(tokenFuzzNow.Add(-tokenFuzzLeeway)) {
			t.Fatalf("Verify(%q) accepted a token that expired at %v, before %v less the %v skew",
				token, id.Expires, tokenFuzzNow, tokenFuzzLeeway)
		}
	})
}
