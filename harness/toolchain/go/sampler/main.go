// meshproof-sampler: the traffic sampler's wire. It sends the requests of a batch over pooled
// keep-alive connections (Go's net/http client), at most `concurrency` in flight, and writes one
// record per response. Which requests, and what the responses mean, is decided in Python
// (harness/traffic/client.py); this program only sends and records, at a fraction of the CPU a
// Python HTTP client spends per request.
//
// Protocol: one JSON object per line on stdin and stdout.
//
//	in  {"op":"run","plans":[PLAN...],"counts":[N...],"concurrency":C}
//	    PLAN = {"method","url","headers":[[name,value]...],"host","close","timeout_s"}
//	    timeout_s bounds a request from the moment it has a connection to the end of its body;
//	    opening a connection is bounded by the connect timeout the program was started with.
//	    Requests are issued round-robin over the plans (request i of every plan with i < its
//	    count, then i+1), the order harness.traffic.client.issue_order gives.
//	out {"k":plan,"i":index,"s":status,"l":latency_ms,"h":{...},"b":body,"e":error}
//	    one per finished request, in completion order; "h" holds the response headers the sampler
//	    reads (lower-case names), "b" the body (at most maxBody bytes), "e" why there was no
//	    response (status 0).
//	out {"done":true,"issued":M}  after the last record of the batch.
//	in  {"op":"stop"}   issue nothing more in the current batch (requests in flight finish).
//	in  {"op":"reset"}  between batches: close the pooled connections; answered {"reset":true}.
//
// End of stdin ends the program at once (its parent is gone or closed it). Proxy variables are
// ignored, redirects are not followed, responses are not decompressed.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const maxBody = 64 << 10

// How long a record may wait in the buffer: the lag a sequential check's look can have.
const flushEvery = 10 * time.Millisecond

var errReadTimeout = errors.New("no complete response")

// The response headers the sampler reads (harness.traffic.client._response).
var keptHeaders = []string{"server", "x-envoy-overloaded", "x-envoy-upstream-service-time"}

type plan struct {
	Method   string      `json:"method"`
	URL      string      `json:"url"`
	Headers  [][2]string `json:"headers"`
	Host     string      `json:"host"`
	Close    bool        `json:"close"`
	TimeoutS float64     `json:"timeout_s"`
}

type command struct {
	Op          string `json:"op"`
	Plans       []plan `json:"plans"`
	Counts      []int  `json:"counts"`
	Concurrency int    `json:"concurrency"`
}

type record struct {
	K int               `json:"k"`
	I int               `json:"i"`
	S int               `json:"s"`
	L float64           `json:"l"`
	H map[string]string `json:"h,omitempty"`
	B string            `json:"b"`
	E string            `json:"e,omitempty"`
}

type job struct{ k, i int }

type engine struct {
	client  *http.Client
	out     chan any
	stopped atomic.Bool
}

func main() {
	connect := 5 * time.Second
	maxConns := 64
	if len(os.Args) == 3 {
		var c float64
		fmt.Sscan(os.Args[1], &c)
		fmt.Sscan(os.Args[2], &maxConns)
		connect = time.Duration(c * float64(time.Second))
	}
	transport := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: connect}).DialContext,
		MaxConnsPerHost:     maxConns,
		MaxIdleConns:        maxConns,
		MaxIdleConnsPerHost: maxConns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	e := &engine{
		client: &http.Client{
			Transport:     transport,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		out: make(chan any, 1024),
	}
	writerDone := make(chan struct{})
	go e.write(os.Stdout, writerDone)

	runs := make(chan command)
	go func() { // stdin: stop acts at once; run and reset go to the main loop
		in := bufio.NewScanner(os.Stdin)
		in.Buffer(make([]byte, 1<<20), 64<<20)
		for in.Scan() {
			var c command
			if err := json.Unmarshal(in.Bytes(), &c); err != nil {
				fmt.Fprintf(os.Stderr, "meshproof-sampler: bad command %q: %v\n", in.Text(), err)
				os.Exit(2)
			}
			if c.Op == "stop" {
				e.stopped.Store(true)
				continue
			}
			runs <- c
		}
		os.Exit(0)
	}()
	for c := range runs {
		switch c.Op {
		case "run":
			e.stopped.Store(false)
			e.out <- map[string]any{"done": true, "issued": e.run(c)}
		case "reset":
			transport.CloseIdleConnections()
			e.out <- map[string]bool{"reset": true}
		default:
			fmt.Fprintf(os.Stderr, "meshproof-sampler: unknown op %q\n", c.Op)
			os.Exit(2)
		}
	}
	close(e.out)
	<-writerDone
}

// write encodes what the workers produce. Records are flushed at most flushEvery after they
// were written (or when the buffer fills), so the reader wakes once per handful of records rather
// than once per record; the end of a batch and a reset are flushed at once.
func (e *engine) write(w io.Writer, done chan<- struct{}) {
	buf := bufio.NewWriterSize(w, 1<<16)
	enc := json.NewEncoder(buf)
	var due <-chan time.Time
	flush := func() {
		if err := buf.Flush(); err != nil {
			os.Exit(0) // the reader is gone
		}
		due = nil
	}
	for {
		select {
		case v, ok := <-e.out:
			if !ok {
				flush()
				close(done)
				return
			}
			if err := enc.Encode(v); err != nil {
				os.Exit(0)
			}
			if _, isRecord := v.(record); !isRecord || buf.Buffered() > 32<<10 {
				flush()
			} else if due == nil {
				due = time.After(flushEvery)
			}
		case <-due:
			flush()
		}
	}
}

// run sends the batch and returns how many requests it issued.
func (e *engine) run(c command) int {
	jobs := make(chan job)
	var wg sync.WaitGroup
	workers := max(c.Concurrency, 1)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				e.out <- e.one(j, &c.Plans[j.k])
			}
		}()
	}
	issued := 0
	longest := 0
	for _, n := range c.Counts {
		longest = max(longest, n)
	}
issue:
	for i := range longest {
		for k, n := range c.Counts {
			if i >= n {
				continue
			}
			if e.stopped.Load() {
				break issue
			}
			jobs <- job{k, i} // blocks while every worker has a request in flight
			issued++
		}
	}
	close(jobs)
	wg.Wait()
	return issued
}

func (e *engine) one(j job, p *plan) record {
	r := record{K: j.k, I: j.i}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) {
		if timer != nil { // a retry on another connection: its own time
			timer.Stop()
		}
		timer = time.AfterFunc(time.Duration(p.TimeoutS*float64(time.Second)), func() { cancel(errReadTimeout) })
	}}
	start := time.Now()
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), p.Method, p.URL, nil)
	if err != nil {
		r.E = "connection failed: " + err.Error()
		return r
	}
	for _, h := range p.Headers {
		req.Header.Add(h[0], h[1])
	}
	if p.Host != "" {
		req.Host = p.Host
	}
	req.Close = p.Close
	resp, err := e.client.Do(req)
	if err == nil {
		var body []byte
		body, err = io.ReadAll(io.LimitReader(resp.Body, maxBody))
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body) // the rest, so the connection can be reused
		}
		resp.Body.Close()
		if err == nil {
			r.S = resp.StatusCode
			r.B = string(body)
			for _, name := range keptHeaders {
				if values := resp.Header.Values(name); len(values) > 0 {
					if r.H == nil {
						r.H = make(map[string]string, len(keptHeaders))
					}
					r.H[name] = strings.Join(values, ", ")
				}
			}
		}
	}
	r.L = float64(time.Since(start).Nanoseconds()) / 1e6
	if err != nil {
		r.S, r.B, r.H = 0, "", nil
		if errors.Is(context.Cause(ctx), errReadTimeout) {
			err = fmt.Errorf("%w after %gs: %v", errReadTimeout, p.TimeoutS, err)
		}
		r.E = describe(err)
	}
	return r
}

func describe(err error) string {
	var ne net.Error
	if errors.Is(err, errReadTimeout) || (errors.As(err, &ne) && ne.Timeout()) {
		return "timeout: " + err.Error()
	}
	return "connection failed: " + err.Error()
}
