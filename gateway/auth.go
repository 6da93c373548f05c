package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/storage"
)

// labelUserTokens derives the user-token key from the cluster secret; the
// node-to-node key uses another label, so neither can stand in for the
// other.
const labelUserTokens = "herald user tokens v1"

// MaxTokenTTL bounds the lifetime Mint gives a token.
const MaxTokenTTL = 366 * 24 * time.Hour

// errUnauthenticated is the one answer to every bad or missing token: the
// reason goes to the log, never to the client.
var errUnauthenticated = errors.New("a valid bearer token is required: send Authorization: Bearer TOKEN (mint one with \"herald token\")")

// Authenticator mints and verifies user bearer tokens: HS256 JWTs whose
// sub is the user id, with an expiry and an optional admin claim, signed
// with a key derived from the cluster secret. It is safe for concurrent
// use.
type Authenticator struct {
	key []byte
	now func() time.Time
}

// NewAuthenticator returns an Authenticator for a cluster secret.
func NewAuthenticator(secret []byte) *Authenticator {
	return &Authenticator{key: cluster.DeriveKey(secret, labelUserTokens), now: time.Now}
}

// claims are a token's claims.
type claims struct {
	jwt.RegisteredClaims
	Admin bool `json:"adm,omitempty"`
}

// Identity is who a verified token speaks for, and until when.
type Identity struct {
	storage.Caller
	Expires time.Time
}

// Mint returns a token for user, valid for ttl (at most MaxTokenTTL).
func (a *Authenticator) Mint(user string, admin bool, ttl time.Duration) (string, error) {
	if err := storage.ValidateUserID(user); err != nil {
		return "", err
	}
	if ttl <= 0 || ttl > MaxTokenTTL {
		return "", fmt.Errorf("token lifetime %v: want more than 0 and at most %v", ttl, MaxTokenTTL)
	}
	now := a.now()
	c := claims{RegisteredClaims: jwt.RegisteredClaims{
		Subject:   user,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}, Admin: admin}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(a.key)
}

// Verify checks a token's signature (HS256 only), expiry and subject.
// Its parts must be canonical base64url, with nothing else in them (the
// decoder would skip line breaks): otherwise one token would have several
// spellings.
func (a *Authenticator) Verify(token string) (Identity, error) {
	if err := tokenChars(token); err != nil {
		return Identity{}, err
	}
	c := &claims{}
	_, err := jwt.ParseWithClaims(token, c, func(*jwt.Token) (any, error) { return a.key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithStrictDecoding(),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(a.now),
		jwt.WithLeeway(5*time.Second))
	if err != nil {
		return Identity{}, err
	}
	if err := storage.ValidateUserID(c.Subject); err != nil {
		return Identity{}, fmt.Errorf("token subject: %w", err)
	}
	return Identity{Caller: storage.Caller{User: c.Subject, Admin: c.Admin}, Expires: c.ExpiresAt.Time}, nil
}

// bearer returns the token of an Authorization: Bearer header.
func bearer(h http.Header) (string, bool) {
	v := h.Get("Authorization")
	scheme, token, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return strings.TrimSpace(token), true
}

type identityKey struct{}

// withIdentity returns ctx carrying who the request is from.
func withIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// identity returns who a request is from. With authentication off every
// request is Anonymous, an admin, with no expiry.
func (s *Server) identity(ctx context.Context) Identity {
	if id, ok := ctx.Value(identityKey{}).(Identity); ok {
		return id
	}
	return Identity{Caller: Anonymous}
}

// caller returns who a request is from.
func (s *Server) caller(ctx context.Context) storage.Caller { return s.identity(ctx).Caller }

// authenticate verifies a request's bearer token. It returns the identity
// to serve the request as, or an unauthenticated error; with
// authentication off it returns Anonymous.
func (s *Server) authenticate(h http.Header) (Identity, error) {
	if s.cfg.Auth == nil {
		return Identity{Caller: Anonymous}, nil
	}
	token, ok := bearer(h)
	if !ok {
		return Identity{}, errUnauthenticated
	}
	id, err := s.cfg.Auth.Verify(token)
	if err != nil {
		s.log.Debug("token refused", "err", err) // never the token itself
		return Identity{}, errUnauthenticated
	}
	return id, nil
}

// requestGate authenticates a Connect, gRPC or gRPC-Web call from its
// headers, before its body is read or decoded.
func (s *Server) requestGate(ctx context.Context, spec connect.Spec, _ connect.Peer, h http.Header) (context.Context, error) {
	if err := s.checkRole(spec); err != nil {
		return nil, err
	}
	id, err := s.authenticate(h)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnauthenticated, err)
	}
	return withIdentity(ctx, id), nil
}

// maxTokenBytes bounds a token; the ones Mint makes are about 200 bytes.
const maxTokenBytes = 4 << 10

// tokenChars refuses a token longer than maxTokenBytes or with a
// character other than base64url's and the dots between its parts.
func tokenChars(token string) error {
	if len(token) > maxTokenBytes {
		return fmt.Errorf("token of %d bytes; the limit is %d", len(token), maxTokenBytes)
	}
	for i := 0; i < len(token); i++ {
		switch c := token[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return fmt.Errorf("token: byte %d is neither a base64url character nor a dot", i) // not the byte: tokens stay out of logs
		}
	}
	return nil
}
