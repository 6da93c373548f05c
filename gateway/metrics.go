package gateway

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	heraldv1 "github.com/heraldhq/herald/api/gen/herald/v1"
)

// requestBuckets are the buckets of the request duration histogram, in
// seconds: 100 µs (a read served locally) to 10 s (a request's deadline).
var requestBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// gwMetrics are the gateway's measurements in Prometheus form. Labels are
// procedures, codes and resync reasons: fixed sets, never channel or user
// ids.
type gwMetrics struct {
	requests  *prometheus.CounterVec   // procedure, code
	duration  *prometheus.HistogramVec // procedure; unary calls only
	posts     prometheus.Counter
	eventsIn  prometheus.Counter
	eventsOut prometheus.Counter
	resyncs   *prometheus.CounterVec // reason
	subs      prometheus.Gauge
	streams   atomic.Int64 // Subscribe streams open
}

func newGWMetrics() *gwMetrics {
	m := &gwMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_requests_total",
			Help: "Connect requests answered, by procedure and code (ok, or the Connect error code).",
		}, []string{"procedure", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_request_duration_seconds",
			Help:    "Time to answer a unary Connect request, by procedure.",
			Buckets: requestBuckets,
		}, []string{"procedure"}),
		posts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_posts_acknowledged_total",
			Help: "Posts acknowledged to clients through this node (Connect unary and streaming, WebSocket), once durable on a majority; a retried client_msg_id counts again.",
		}),
		eventsIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_gateway_events_in_total",
			Help: "Events the gateway received from upstream streams of the channels it watches.",
		}),
		eventsOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_gateway_events_out_total",
			Help: "Events the gateway queued to subscribers (deliveries: live and backlog).",
		}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_gateway_resyncs_total",
			Help: "Subscriptions ended with resync_required, by reason.",
		}, []string{"reason"}),
		subs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_gateway_subscriptions",
			Help: "Subscriptions open (WebSocket subscriptions and Subscribe streams).",
		}),
	}
	for _, r := range []heraldv1.ResyncRequired_Reason{heraldv1.ResyncRequired_SLOW_CONSUMER,
		heraldv1.ResyncRequired_CURSOR_EXPIRED, heraldv1.ResyncRequired_CURSOR_AHEAD} {
		m.resyncs.WithLabelValues(reasonLabel(r))
	}
	return m
}

// reasonLabel is a resync reason as a label value: slow_consumer.
func reasonLabel(r heraldv1.ResyncRequired_Reason) string { return strings.ToLower(r.String()) }

// resync counts a resync_required sent to a subscriber.
func (m *gwMetrics) resync(r *heraldv1.ResyncRequired) {
	m.resyncs.WithLabelValues(reasonLabel(r.GetReason())).Inc()
}

// register adds the gateway's series to reg, with those read at scrape
// time from the server: connections, queued frames, upstream streams.
func (m *gwMetrics) register(reg prometheus.Registerer, s *Server) error {
	gauges := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "herald_gateway_connections",
			Help:        "Client connections open, by kind: WebSocket connections and Subscribe streams.",
			ConstLabels: prometheus.Labels{"kind": "websocket"},
		}, func() float64 { return float64(s.ws.connections()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "herald_gateway_connections",
			Help:        "Client connections open, by kind: WebSocket connections and Subscribe streams.",
			ConstLabels: prometheus.Labels{"kind": "subscribe_stream"},
		}, func() float64 { return float64(m.streams.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_gateway_queued_frames",
			Help: "Frames queued to WebSocket connections and not yet written, summed over connections.",
		}, func() float64 { return float64(s.ws.queued()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_gateway_upstream_streams",
			Help: "Upstream event streams the gateway holds: one per channel watched here.",
		}, func() float64 { return float64(s.hub.topicCount()) }),
	}
	var errs []error
	for _, c := range append(gauges, m.requests, m.duration, m.posts, m.eventsIn, m.eventsOut, m.resyncs, m.subs) {
		errs = append(errs, reg.Register(c))
	}
	return errors.Join(errs...)
}

// interceptor counts and times every Connect request.
func (m *gwMetrics) interceptor() connect.Interceptor { return metricsInterceptor{m} }

type metricsInterceptor struct{ m *gwMetrics }

func codeLabel(err error) string {
	if err == nil {
		return "ok"
	}
	return connect.CodeOf(err).String()
}

func (i metricsInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		resp, err := next(ctx, req)
		p := req.Spec().Procedure
		i.m.duration.WithLabelValues(p).Observe(time.Since(start).Seconds())
		i.m.requests.WithLabelValues(p, codeLabel(err)).Inc()
		return resp, err
	}
}

func (i metricsInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i metricsInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		err := next(ctx, conn)
		i.m.requests.WithLabelValues(conn.Spec().Procedure, codeLabel(err)).Inc()
		return err
	}
}

// MetricsHandler serves the registry in Prometheus's text format, to
// anyone: for a listener of its own (herald server --metrics-addr). The
// HTTP port serves it at /metrics to admins only.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.gather, promhttp.HandlerOpts{ErrorLog: metricsLog{s}})
}

type metricsLog struct{ s *Server }

func (l metricsLog) Println(v ...any) { l.s.log.Warn("serve metrics", "detail", v) }
