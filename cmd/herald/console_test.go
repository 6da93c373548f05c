package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/chromedp/chromedp"

	"github.com/heraldhq/herald/api/gen/herald/v1/heraldv1connect"
)

// requireChromiumEnv, set by .ci/run (which installs Debian's chromium),
// makes a missing browser fail the console tests instead of skipping them.
const requireChromiumEnv = "HERALD_TEST_REQUIRE_CHROMIUM"

// browserWait bounds each wait for the page to show something.
const browserWait = 20 * time.Second

// chromium finds Debian's chromium (or another Chrome) on PATH.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv(requireChromiumEnv) != "" {
		t.Fatalf("no chromium on PATH; .ci/run installs Debian's chromium package")
	}
	t.Skipf("no chromium on PATH: apt-get install chromium to run this test (.ci/run does)")
	return ""
}

// browser is one headless Chromium for a test; each tab is a context.
type browser struct {
	t    *testing.T
	root context.Context
	mu   sync.Mutex
	errs []string // uncaught exceptions and errors logged, from any tab
	down bool     // the node is restarting: refused connections are expected
	dir  string   // where screenshots go
}

func startBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox refuses to start
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	root, cancel := chromedp.NewContext(actx)
	if err := chromedp.Do(root); err != nil { // starts the browser
		cancel()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() { cancel(); cancelAlloc() })
	return &browser{t: t, root: root, dir: t.ArtifactDir()}
}

// tab opens a new tab at url and collects the page's errors.
func (b *browser) tab(url string) context.Context {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.root)
	b.t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		b.t.Fatalf("open a tab: %v", err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			// A refused call (401, 403, 404) is logged as an error; the tests
			// make those on purpose and check what the page says instead.
			// So is a connection refused while a test restarts the node (a
			// page that reconnects before the node is back retries).
			if (m.Type == chromedp.ConsoleError && !strings.Contains(m.Text, "status of 40")) || m.IsException() {
				b.mu.Lock()
				if !b.down || !strings.Contains(m.Text, "ERR_CONNECTION_REFUSED") {
					b.errs = append(b.errs, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line))
				}
				b.mu.Unlock()
			}
		}
	}()
	b.run(ctx, chromedp.Navigate(url))
	return ctx
}

// run runs steps in a tab within browserWait, failing the test on error.
func (b *browser) run(ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	c, cancel := context.WithTimeout(ctx, browserWait)
	defer cancel()
	if err := chromedp.Do(c, steps...); err != nil {
		b.t.Fatalf("browser: %v\npage errors: %v\n<main>: %s", err, b.pageErrors(), b.main(ctx))
	}
}

// main returns the HTML of the page's main element, for failure messages.
func (b *browser) main(ctx context.Context) string {
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	html, err := chromedp.Run(c, chromedp.OuterHTML(chromedp.CSS("main")))
	if err != nil {
		return err.Error()
	}
	return html
}

// text returns the visible text of the first element sel matches, once
// one exists.
func (b *browser) text(ctx context.Context, sel string) string {
	b.t.Helper()
	c, cancel := context.WithTimeout(ctx, browserWait)
	defer cancel()
	s, err := chromedp.Run(c, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v\n<main>: %s", sel, err, b.main(ctx))
	}
	return s
}

// eval evaluates expr in the page.
func (b *browser) eval(ctx context.Context, expr string) (string, error) {
	c, cancel := context.WithTimeout(ctx, browserWait)
	defer cancel()
	return chromedp.Run(c, chromedp.Evaluate[string](expr))
}

// waitJS waits until expr is true in the page.
func (b *browser) waitJS(ctx context.Context, what, expr string) {
	b.t.Helper()
	checkFor(b.t, browserWait, 50*time.Millisecond, func() error {
		c, cancel := context.WithTimeout(ctx, browserWait)
		defer cancel()
		ok, err := chromedp.Run(c, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return nil
		}
		return pageError{b: b, ctx: ctx, msg: fmt.Sprintf("page never showed %s (%s: %v)", what, expr, err)}
	})
}

// pageError is a wait that gave up; it reads what the page shows only
// when the failure is reported, not at every poll.
type pageError struct {
	b   *browser
	ctx context.Context
	msg string
}

func (e pageError) Error() string {
	return fmt.Sprintf("%s\npage errors: %v\n<main>: %s", e.msg, e.b.pageErrors(), e.b.main(e.ctx))
}

// screenshot saves the tab as name.png in the test's artifact directory
// (go test -artifacts keeps it).
func (b *browser) screenshot(ctx context.Context, name string) {
	b.t.Helper()
	c, cancel := context.WithTimeout(ctx, browserWait)
	defer cancel()
	png, err := chromedp.Run(c, chromedp.FullScreenshot(100)) // quality 100 makes a PNG; below, a JPEG
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(b.dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", path)
}

// restarting says whether the node the pages talk to is being restarted:
// connections it refuses meanwhile are not errors. Clear it once the pages
// are connected again.
func (b *browser) restarting(on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.down = on
}

func (b *browser) pageErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errs...)
}

// checkNoPageErrors fails the test if any tab threw or logged an error.
func (b *browser) checkNoPageErrors() {
	b.t.Helper()
	if errs := b.pageErrors(); len(errs) > 0 {
		b.t.Errorf("the console's pages reported errors:\n%s", strings.Join(errs, "\n"))
	}
}

// messagesShown is a JavaScript expression listing the texts of the
// messages on a channel page, in order.
const messagesShown = `[...document.querySelectorAll("#messages li[data-seq] .text")].map(e => e.textContent)`

// TestConsole drives the web console in headless Chromium against
// `herald dev --nodes 3` (authentication off): create a channel from one
// node's page, post from it, see the post arrive live on a page served by
// another node (and one posted through the API on the third), reload to
// see it from history, and read the ring and the nodes.
func TestConsole(t *testing.T) {
	t.Parallel()
	b := startBrowser(t)
	c := startDevCluster(t, 3)
	url := func(i int, view string) string { return "http://" + c.Addrs[i] + "/" + view }

	a := b.tab(url(0, "#/channels"))
	b.waitJS(a, "the channel list", `!!document.querySelector("#no-channels, #channels-table")`)
	b.run(a,
		chromedp.SendKeys(chromedp.ID("create-id"), "lobby"),
		chromedp.SendKeys(chromedp.ID("create-name"), "The lobby"),
		chromedp.Click(chromedp.ID("create-submit")))
	b.waitJS(a, "the new channel, subscribed", `location.hash === "#/channels/lobby" && document.querySelector("#live")?.dataset.state === "live"`)

	other := b.tab(url(1, "#/channels/lobby"))
	b.waitJS(other, "the channel on n2, subscribed", `document.querySelector("#live")?.dataset.state === "live"`)

	b.run(a,
		chromedp.SendKeys(chromedp.ID("post-text"), "hello from n1's page"),
		chromedp.Click(chromedp.ID("post-send")))
	want := `JSON.stringify(` + messagesShown + `) === JSON.stringify(%s)`
	b.waitJS(other, "the post on n2's page", fmt.Sprintf(want, `["hello from n1's page"]`))
	b.waitJS(a, "the post on n1's page", fmt.Sprintf(want, `["hello from n1's page"]`))

	msgs := heraldv1connect.NewMessageServiceClient(c.Client, "http://"+c.Addrs[2])
	if _, err := post(msgs, "lobby", "api-1", "hello from the API on n3"); err != nil {
		t.Fatalf("post through n3: %v", err)
	}
	both := `["hello from n1's page","hello from the API on n3"]`
	b.waitJS(other, "the API's post on n2's page", fmt.Sprintf(want, both))
	b.waitJS(a, "the API's post on n1's page", fmt.Sprintf(want, both))
	if got := b.text(other, "#channel-title"); got != "The lobby (lobby)" {
		t.Errorf("channel title: got %q, want %q", got, "The lobby (lobby)")
	}
	b.screenshot(other, "channel")

	// A reload reads the same from history, then subscribes from its head.
	b.run(other, chromedp.Reload())
	b.waitJS(other, "the channel from history after a reload", fmt.Sprintf(want, both)+
		` && document.querySelector("#live")?.dataset.state === "live"`)
	b.run(a,
		chromedp.SendKeys(chromedp.ID("post-text"), "after the reload"),
		chromedp.Click(chromedp.ID("post-send")))
	b.waitJS(other, "a live post after the reload", fmt.Sprintf(want,
		`["hello from n1's page","hello from the API on n3","after the reload"]`))

	b.run(a, chromedp.Navigate(url(0, "#/channels")))
	b.waitJS(a, "lobby in the channel list", `Number(document.querySelector('#channels-table tr[data-channel="lobby"] td:nth-child(5)')?.textContent) >= 3`)

	// The ring: every partition with a leader and three replicas.
	b.run(a, chromedp.Navigate(url(0, "#/ring")))
	b.waitJS(a, "every partition led, with 3 replicas", `(() => {
		const rows = [...document.querySelectorAll("#ring-table tbody tr")];
		return rows.length === 16 && rows.every(r => r.dataset.leader !== "" &&
			r.querySelectorAll(".replica").length === 3 && r.querySelector(".badge.ok"));
	})()`)
	if got := b.text(a, "#ring-summary"); got != "16 ok · 0 degraded · 0 no quorum" {
		t.Errorf("ring summary: got %q", got)
	}
	b.screenshot(a, "ring")

	// The view refreshes by itself: a post moves its partition's commit index.
	commits := `[...document.querySelectorAll("#ring-table tbody tr td:nth-child(5)")].reduce((n, td) => n + Number(td.textContent), 0)`
	before, err := b.eval(a, "String("+commits+")")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := post(msgs, "lobby", "api-2", "while the ring is on screen"); err != nil {
		t.Fatalf("post through n3: %v", err)
	}
	b.waitJS(a, "the ring's commit indexes moving", commits+" > "+before)

	b.run(a, chromedp.Navigate(url(0, "#/nodes")))
	b.waitJS(a, "three reachable active nodes", `(() => {
		const rows = [...document.querySelectorAll("#nodes-table tbody tr")];
		return rows.length === 3 && rows.every(r => r.dataset.reachable === "true" && r.textContent.includes("active"));
	})()`)
	b.screenshot(a, "nodes")

	// A bookmarked view opens as such in a fresh tab.
	fresh := b.tab(url(2, "#/ring"))
	b.waitJS(fresh, "the ring from a bookmark", `document.querySelectorAll("#ring-table tbody tr").length === 16`)
	b.checkNoPageErrors()
}

// TestConsoleToken drives the console against a node with authentication
// on: without a token the page asks for one; a user's token, pasted once,
// lists that user's channels and works over the WebSocket, survives a
// reload (session storage) and a restart of the node (the page resumes
// by itself), and is refused the ring; an admin's shows it.
func TestConsoleToken(t *testing.T) {
	t.Parallel()
	b := startBrowser(t)
	secret := filepath.Join(t.TempDir(), "cluster.secret")
	if r := runHerald(t, "secret", "new", secret); r.code != 0 {
		t.Fatalf("herald secret new: %d %s", r.code, r.stderr)
	}
	mint := func(args ...string) string {
		r := runHerald(t, append([]string{"token", "--secret-file", secret}, args...)...)
		if r.code != 0 {
			t.Fatalf("herald token %v: %d %s", args, r.code, r.stderr)
		}
		return strings.TrimSpace(r.stdout)
	}
	alice, bob, admin := mint("--user", "alice"), mint("--user", "bob"), mint("--user", "ops", "--admin")
	p := startDev(t, devOptions{args: []string{"--secret-file", secret}})

	tab := b.tab(p.URL + "/#/channels")
	b.waitJS(tab, "a request for a token", `!document.querySelector("#token-panel").hidden &&
		document.querySelector("#error")?.dataset.code === "unauthenticated"`)
	paste := func(token string) {
		b.run(tab,
			chromedp.SendKeys(chromedp.ID("token-input"), token),
			chromedp.Click(chromedp.ID("token-save")))
	}
	paste(alice)
	b.waitJS(tab, "an empty channel list", `!!document.querySelector("#no-channels")`)
	b.run(tab,
		chromedp.SendKeys(chromedp.ID("create-id"), "alices"),
		chromedp.Click(chromedp.ID("create-submit")))
	b.waitJS(tab, "alice's channel, subscribed", `document.querySelector("#live")?.dataset.state === "live"`)
	b.run(tab,
		chromedp.SendKeys(chromedp.ID("post-text"), "posted with a token"),
		chromedp.Click(chromedp.ID("post-send")))
	b.waitJS(tab, "the post, as alice", `JSON.stringify(`+messagesShown+`) === '["posted with a token"]' &&
		document.querySelector("#messages li[data-seq] .user").textContent === "alice" &&
		document.querySelector("#who").textContent === "alice"`)

	// bob opens the channel in a tab of his own: alice's page sees him come
	// online and type, and go when his tab closes.
	bobTab := b.tab(p.URL + "/#/channels/alices")
	b.waitJS(bobTab, "a request for bob's token", `document.querySelector("#error")?.dataset.code === "unauthenticated"`)
	b.run(bobTab,
		chromedp.SendKeys(chromedp.ID("token-input"), bob),
		chromedp.Click(chromedp.ID("token-save")))
	b.waitJS(bobTab, "bob subscribed, not a member", `document.querySelector("#live")?.dataset.state === "live" && !!document.querySelector("#join")`)
	b.run(bobTab, chromedp.Click(chromedp.ID("join")))
	b.waitJS(bobTab, "bob a member", `document.querySelector("#channel-info").textContent.startsWith("2 members")`)
	b.waitJS(tab, "bob online and a member on alice's page", `document.querySelector("#presence").textContent === "seen online: bob" &&
		document.querySelector("#channel-info").textContent.startsWith("2 members")`)
	b.run(bobTab, chromedp.SendKeys(chromedp.ID("post-text"), "hi alice"))
	b.waitJS(tab, "bob typing on alice's page", `document.querySelector("#typing").textContent === "bob is typing…"`)
	b.screenshot(tab, "channel-typing")
	b.run(bobTab, chromedp.Click(chromedp.ID("post-send")))
	b.waitJS(tab, "bob's post, and his typing gone", `JSON.stringify(`+messagesShown+`) === '["posted with a token","hi alice"]' &&
		document.querySelector("#typing").textContent === ""`)
	if err := chromedp.Cancel(bobTab); err != nil {
		t.Fatalf("close bob's tab: %v", err)
	}
	b.waitJS(tab, "bob gone from alice's page", `document.querySelector("#presence").textContent === ""`)

	if stored, err := b.eval(tab, `sessionStorage.getItem("herald.token")`); err != nil || stored != alice {
		t.Errorf("session storage holds %q (%v), want alice's token", stored, err)
	}
	b.run(tab, chromedp.Reload())
	b.waitJS(tab, "the channel after a reload, without pasting again", `document.querySelector("#live")?.dataset.state === "live" &&
		JSON.stringify(`+messagesShown+`) === '["posted with a token","hi alice"]'`)

	// The node restarts under the page: told to reconnect, the page comes
	// back by itself and resumes after the last event it showed. If the
	// node takes longer to come back than the delay it asked for, the
	// page's first attempts are refused, and it tries again.
	b.restarting(true)
	if code, _ := p.Signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("herald dev exited %d after SIGTERM", code)
	}
	b.waitJS(tab, "the page reconnecting", `document.querySelector("#live").dataset.state === "connecting"`)
	p = startDev(t, devOptions{dataDir: p.dataDir, httpAddr: p.HTTPAddr, raftAddr: p.RaftAddr,
		args: []string{"--secret-file", secret}})
	msgs := heraldv1connect.NewMessageServiceClient(p.Client, p.URL, connect.WithInterceptors(bearer(alice)))
	if _, err := post(msgs, "alices", "api-1", "after the restart"); err != nil {
		t.Fatalf("post after the restart: %v", err)
	}
	b.waitJS(tab, "the post after the restart, once", `document.querySelector("#live").dataset.state === "live" &&
		JSON.stringify(`+messagesShown+`) === '["posted with a token","hi alice","after the restart"]'`)
	b.restarting(false)

	b.run(tab, chromedp.Navigate(p.URL+"/#/ring"))
	b.waitJS(tab, "the ring refused to a user", `document.querySelector("#error")?.dataset.code === "permission_denied" &&
		!document.querySelector("#token-panel").hidden && document.querySelector("#token-reason").textContent.includes("admin token")`)
	paste(admin)
	b.waitJS(tab, "the ring, as an admin", `document.querySelectorAll("#ring-table tbody tr").length > 0 &&
		[...document.querySelectorAll("#ring-table tbody tr")].every(r => r.dataset.leader === "n1")`)

	// Another tab has its own session storage: it asks again.
	b.waitJS(b.tab(p.URL+"/#/nodes"), "a request for a token in a new tab", `document.querySelector("#error")?.dataset.code === "unauthenticated"`)
	b.checkNoPageErrors()
}
