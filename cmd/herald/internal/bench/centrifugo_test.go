package bench

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestParseCentrifugoFrame reads a frame of several replies, a ping and a
// line that is not JSON, as Centrifugo batches them.
func TestParseCentrifugoFrame(t *testing.T) {
	frame := `{"id":2,"subscribe":{"epoch":"x","offset":7,"positioned":true}}
{}
{"push":{"channel":"c1","pub":{"data":{"id":"m3.99","text":"hi"},"offset":8}}}
not json
{"id":3,"error":{"code":103,"message":"permission denied"}}
`
	replies, pings, bad := parseCentrifugoFrame([]byte(frame))
	if pings != 1 || bad != 1 || len(replies) != 3 {
		t.Fatalf("got %d replies, %d pings, %d bad lines; want 3, 1, 1", len(replies), pings, bad)
	}
	if r := replies[0]; r.ID != cfSubscribeID || r.Subscribe == nil || r.Subscribe.Offset != 7 {
		t.Errorf("first reply %+v: want the subscribe reply at offset 7", r)
	}
	if p := replies[1].Push; p == nil || p.Channel != "c1" || p.Pub == nil || p.Pub.Offset != 8 || p.Pub.Data.ID != "m3.99" {
		t.Errorf("second reply %+v: want the push of offset 8 in c1 with id m3.99", replies[1])
	}
	if e := replies[2].Error; e == nil || e.Code != 103 {
		t.Errorf("third reply %+v: want error 103", replies[2])
	}
}

// TestCentrifugoPoster publishes through an HTTP API that answers as
// Centrifugo's does: the offset on success, the error's code otherwise,
// and no offset for a channel without history.
func TestCentrifugoPoster(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/publish" || r.Header.Get("X-API-Key") != "k" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		b, _ := io.ReadAll(r.Body)
		switch {
		case strings.Contains(string(b), `"channel":"ok"`) && strings.Contains(string(b), `"id":"m1.5"`):
			io.WriteString(w, `{"result":{"offset":42,"epoch":"e"}}`)
		case strings.Contains(string(b), `"channel":"nohistory"`):
			io.WriteString(w, `{"result":{}}`)
		default:
			io.WriteString(w, `{"error":{"code":102,"message":"unknown channel"}}`)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	p := centrifugoSystem{&CentrifugoTarget{APIKey: "k"}}.poster(srv.Client(), addr)
	ctx := context.Background()
	if seq, code, err := p.post(ctx, "ok", "text", "m1.5"); err != nil || seq != 42 {
		t.Errorf("publish to ok: seq %d, code %q, %v; want offset 42", seq, code, err)
	}
	if _, code, err := p.post(ctx, "other", "text", "m1.6"); err == nil || code != "error 102" {
		t.Errorf("publish to other: code %q, %v; want error 102", code, err)
	}
	if _, code, err := p.post(ctx, "nohistory", "text", "m1.7"); err == nil || code != "no offset" {
		t.Errorf("publish to nohistory: code %q, %v; want no offset", code, err)
	}
	bad := centrifugoSystem{&CentrifugoTarget{APIKey: "wrong"}}.poster(srv.Client(), addr)
	if _, code, err := bad.post(ctx, "ok", "text", "m1.5"); err == nil || code != "http 401" {
		t.Errorf("publish with a wrong key: code %q, %v; want http 401", code, err)
	}
}
