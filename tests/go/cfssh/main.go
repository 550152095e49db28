// Command cfssh runs a "cf ssh"-like session with golang.org/x/crypto/ssh,
// the library the cf CLI is built on, so the test suite can check that the
// proxy serves that library the way it serves OpenSSH.
//
// It does what the CLI's util/clissh does, written afresh: a password login
// (ssh.Password, as the CLI offers nothing else), the host key checked
// against a fingerprint in one of the formats Cloud Controller may publish,
// a "keepalive@cloudfoundry.org" global request with want-reply on a ticker,
// a pty shell with the CLI's terminal modes and a window change, an exec
// moving a large stream through and back, and a local forward (-L) whose
// connections are direct-tcpip channels.
//
// Every step prints one JSON object on its own line on stdout, so the test
// asserts each outcome instead of reading prose; the last line is
// {"step":"done"} when every step passed. The exit code is 0 then, 1 when a
// step failed, 2 for a usage error.
package main

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

type options struct {
	address           string
	user              string
	password          string
	fingerprint       string
	hostKeyAlgorithms string
	steps             string
	transfer          int64
	forwardTo         string
	forwardBytes      int
	keepalive         time.Duration
	minKeepalives     int
	timeout           time.Duration
	echo              uint
}

func parseOptions() options {
	var o options
	flag.StringVar(&o.address, "address", "", "the proxy, host:port")
	flag.StringVar(&o.user, "user", "", "the login, cf:APP-GUID/INDEX or diego:PROCESS-GUID/INDEX")
	flag.StringVar(&o.password, "password", "", "the one-time code or the diego credentials")
	flag.StringVar(&o.fingerprint, "fingerprint", "",
		"the proxy's host key fingerprint as the API publishes it: MD5 or SHA-1 hex pairs with colons, SHA-256 hex or unpadded base64")
	flag.StringVar(&o.hostKeyAlgorithms, "hostKeyAlgorithms", "",
		"comma-separated host key algorithms to offer, as an older x/crypto knows them (default: the library's)")
	flag.StringVar(&o.steps, "steps", "keepalive,shell,exec,forward", "the steps after the login, comma-separated")
	flag.Int64Var(&o.transfer, "transfer", 64<<20, "bytes sent through 'cat' and back by the exec step")
	flag.StringVar(&o.forwardTo, "forwardTo", "", "host:port of a TCP echo server, reached through -L")
	flag.IntVar(&o.forwardBytes, "forwardBytes", 1<<20, "bytes sent through each forwarded connection")
	flag.DurationVar(&o.keepalive, "keepalive", time.Second, "interval of the keepalive requests")
	flag.IntVar(&o.minKeepalives, "minKeepalives", 2, "answered keepalives to wait for before logging out")
	flag.UintVar(&o.echo, "echo", 1, "the ECHO terminal mode asked for with the pty (the CLI asks for 1)")
	flag.DurationVar(&o.timeout, "timeout", 60*time.Second, "the whole run's limit")
	flag.Parse()
	if o.address == "" || o.user == "" {
		fmt.Fprintln(os.Stderr, "cfssh: -address and -user are needed")
		os.Exit(2)
	}
	return o
}

var reportLock sync.Mutex

// report writes one step's outcome as a JSON line, whole, whichever
// goroutine reports.
func report(fields map[string]interface{}) {
	line, err := json.Marshal(fields)
	if err != nil {
		panic(err)
	}
	reportLock.Lock()
	defer reportLock.Unlock()
	os.Stdout.Write(append(line, '\n'))
}

func fail(step string, err error) {
	report(map[string]interface{}{"step": step, "ok": false, "error": err.Error()})
	reportLock.Lock() // no other line after this one
	os.Exit(1)
}

// fingerprintOf renders key's fingerprint in the format of expected, told
// apart by length as the cf CLI tells them apart.
func fingerprintOf(key ssh.PublicKey, expected string) (string, error) {
	blob := key.Marshal()
	colons := func(sum []byte) string {
		parts := make([]string, len(sum))
		for i, b := range sum {
			parts[i] = fmt.Sprintf("%02x", b)
		}
		return strings.Join(parts, ":")
	}
	switch len(expected) {
	case 47:
		sum := md5.Sum(blob)
		return colons(sum[:]), nil
	case 59:
		sum := sha1.Sum(blob)
		return colons(sum[:]), nil
	case 64:
		sum := sha256.Sum256(blob)
		return hex.EncodeToString(sum[:]), nil
	case 43:
		sum := sha256.Sum256(blob)
		return base64.RawStdEncoding.EncodeToString(sum[:]), nil
	}
	return "", fmt.Errorf("unsupported host key fingerprint format %q", expected)
}

func hostKeyChecker(expected string, seen *string) ssh.HostKeyCallback {
	return func(_ string, _ net.Addr, key ssh.PublicKey) error {
		sum := sha256.Sum256(key.Marshal())
		*seen = key.Type() + " " + base64.RawStdEncoding.EncodeToString(sum[:])
		got, err := fingerprintOf(key, expected)
		if err != nil {
			return err
		}
		if got != expected {
			return fmt.Errorf("host key verification failed: the fingerprint of the received key was %q", got)
		}
		return nil
	}
}

func connect(o options) *ssh.Client {
	var seen string
	config := &ssh.ClientConfig{
		User:            o.user,
		Auth:            []ssh.AuthMethod{ssh.Password(o.password)},
		HostKeyCallback: hostKeyChecker(o.fingerprint, &seen),
		Timeout:         10 * time.Second,
	}
	if o.hostKeyAlgorithms != "" {
		config.HostKeyAlgorithms = strings.Split(o.hostKeyAlgorithms, ",")
	}
	client, err := ssh.Dial("tcp", o.address, config)
	if err != nil {
		report(map[string]interface{}{"step": "connect", "ok": false, "error": err.Error(), "hostKey": seen})
		reportLock.Lock()
		os.Exit(1)
	}
	report(map[string]interface{}{
		"step": "connect", "ok": true, "hostKey": seen,
		"serverVersion": string(client.ServerVersion()),
		"clientVersion": string(client.ClientVersion()),
	})
	return client
}

// keepalives sends the CLI's global request on a ticker until stop closes,
// counting the requests sent and the replies (accepted or not: the CLI
// only needs one to come back, which proves the connection alive).
type keepalives struct {
	mu       sync.Mutex
	sent     int
	answered int
	accepted int
	errors   []string
	answer   chan struct{}
	finished chan struct{}
}

func (k *keepalives) run(conn ssh.Conn, interval time.Duration, stop <-chan struct{}) {
	defer close(k.finished)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
		}
		k.mu.Lock()
		k.sent++
		k.mu.Unlock()
		ok, _, err := conn.SendRequest("keepalive@cloudfoundry.org", true, nil)
		k.mu.Lock()
		if err != nil {
			k.errors = append(k.errors, err.Error())
		} else {
			k.answered++
			if ok {
				k.accepted++
			}
			select {
			case k.answer <- struct{}{}:
			default:
			}
		}
		k.mu.Unlock()
	}
}

func (k *keepalives) answeredCount() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.answered
}

// shell runs an interactive shell as "cf ssh" does with a terminal: a pty
// with the CLI's modes, then a window change, then a line typed in.
func shell(client *ssh.Client, echo uint32) {
	session, err := client.NewSession()
	if err != nil {
		fail("shell", err)
	}
	defer session.Close()
	modes := ssh.TerminalModes{ssh.ECHO: echo, ssh.TTY_OP_ISPEED: 115200, ssh.TTY_OP_OSPEED: 115200}
	if err := session.RequestPty("xterm", 43, 80, modes); err != nil {
		fail("shell", fmt.Errorf("pty-req: %w", err))
	}
	stdin, err := session.StdinPipe()
	if err != nil {
		fail("shell", err)
	}
	// One buffer each: io.Copy into a bytes.Buffer is its ReadFrom, which
	// two goroutines cannot share.
	var output, stderr bytes.Buffer
	session.Stdout = &output
	session.Stderr = &stderr
	if err := session.Shell(); err != nil {
		fail("shell", fmt.Errorf("shell: %w", err))
	}
	if err := session.WindowChange(30, 100); err != nil {
		fail("shell", fmt.Errorf("window-change: %w", err))
	}
	// The answers are built by the shell, so the echo of the typed line
	// cannot be mistaken for them; "stty -a" shows the terminal's modes
	// while a command runs (readline sets its own while it reads a line).
	io.WriteString(stdin, "echo \"size=$(stty size) speed=$(stty speed) mode=$(stty -a | grep -ow -- '-\\?echo') term=$TERM\"; exit 7\n")
	status := -1
	err = session.Wait()
	var exit *ssh.ExitError
	switch {
	case err == nil:
		status = 0
	case errors.As(err, &exit):
		status = exit.ExitStatus()
	default:
		fail("shell", err)
	}
	report(map[string]interface{}{
		"step": "shell", "ok": true, "exitStatus": status,
		"output": output.String(), "stderr": stderr.String(),
	})
}

// pattern is a reproducible stream of n bytes that does not compress.
func pattern(n int64, seed int64) io.Reader {
	return io.LimitReader(rand.New(rand.NewSource(seed)), n)
}

// exec runs "cat" as "cf ssh APP -c CMD" does and pushes the stream through
// it and back, hashing both ends: every byte crosses the proxy twice, in
// both directions at once, under the channels' flow control.
func execTransfer(client *ssh.Client, size int64) {
	session, err := client.NewSession()
	if err != nil {
		fail("exec", err)
	}
	defer session.Close()
	stdin, err := session.StdinPipe()
	if err != nil {
		fail("exec", err)
	}
	stdout, err := session.StdoutPipe()
	if err != nil {
		fail("exec", err)
	}
	started := time.Now()
	if err := session.Start("cat"); err != nil {
		fail("exec", err)
	}
	sent := sha256.New()
	writeErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.MultiWriter(stdin, sent), pattern(size, 1))
		if closeErr := stdin.Close(); err == nil {
			err = closeErr
		}
		writeErr <- err
	}()
	received := sha256.New()
	n, err := io.Copy(received, stdout)
	if err != nil {
		fail("exec", fmt.Errorf("reading: %w", err))
	}
	if err := <-writeErr; err != nil {
		fail("exec", fmt.Errorf("writing: %w", err))
	}
	status := 0
	if err := session.Wait(); err != nil {
		var exit *ssh.ExitError
		if !errors.As(err, &exit) {
			fail("exec", err)
		}
		status = exit.ExitStatus()
	}
	report(map[string]interface{}{
		"step": "exec", "ok": true, "exitStatus": status, "sent": size, "received": n,
		"sentSha256":     hex.EncodeToString(sent.Sum(nil)),
		"receivedSha256": hex.EncodeToString(received.Sum(nil)),
		"seconds":        time.Since(started).Seconds(),
	})
}

// forward listens locally as "cf ssh -L" does, each accepted connection
// becoming a direct-tcpip channel to target, closed both ways as soon as
// either side ends (the CLI's copyAndClose, no half-close). Then it uses the
// listener: two connections at once, each sending its bytes and reading the
// same number back from the echo server before it closes.
func forward(client *ssh.Client, target string, size int) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("forward", err)
	}
	defer listener.Close()
	go func() {
		for {
			local, err := listener.Accept()
			if err != nil {
				return
			}
			go relay(client, local, target)
		}
	}()
	type result struct {
		Sent     int    `json:"sent"`
		Received int    `json:"received"`
		Match    bool   `json:"match"`
		Error    string `json:"error,omitempty"`
	}
	results := make([]result, 2)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func(r *result, seed int64) {
			defer wg.Done()
			payload, _ := io.ReadAll(pattern(int64(size), seed))
			r.Sent = len(payload)
			conn, err := net.Dial("tcp", listener.Addr().String())
			if err != nil {
				r.Error = err.Error()
				return
			}
			defer conn.Close()
			go conn.Write(payload)
			echoed := make([]byte, len(payload))
			n, err := io.ReadFull(conn, echoed)
			if err != nil {
				r.Error = err.Error()
			}
			r.Received = n
			r.Match = bytes.Equal(payload, echoed[:n])
		}(&results[i], int64(100+i))
	}
	wg.Wait()
	report(map[string]interface{}{"step": "forward", "ok": true, "connections": results})
}

func relay(client *ssh.Client, local net.Conn, target string) {
	defer local.Close()
	remote, err := client.Dial("tcp", target)
	if err != nil {
		report(map[string]interface{}{"step": "forward-dial", "ok": false, "error": err.Error()})
		return
	}
	defer remote.Close()
	done := make(chan struct{}, 2)
	copyAndClose := func(to io.WriteCloser, from io.Reader) {
		io.Copy(to, from)
		to.Close()
		done <- struct{}{}
	}
	go copyAndClose(remote, local)
	go copyAndClose(local, remote)
	<-done
	<-done
}

func main() {
	o := parseOptions()
	time.AfterFunc(o.timeout, func() {
		fail("timeout", fmt.Errorf("the run took longer than %s", o.timeout))
	})
	client := connect(o)
	defer client.Close()

	k := &keepalives{answer: make(chan struct{}, 1), finished: make(chan struct{})}
	stop := make(chan struct{})
	steps := map[string]bool{}
	for _, s := range strings.Split(o.steps, ",") {
		steps[strings.TrimSpace(s)] = true
	}
	if steps["keepalive"] {
		go k.run(client.Conn, o.keepalive, stop)
	}
	if steps["shell"] {
		shell(client, uint32(o.echo))
	}
	if steps["exec"] {
		execTransfer(client, o.transfer)
	}
	if steps["forward"] {
		if o.forwardTo == "" {
			fail("forward", errors.New("-forwardTo is needed"))
		}
		forward(client, o.forwardTo, o.forwardBytes)
	}
	if steps["keepalive"] {
		for k.answeredCount() < o.minKeepalives {
			<-k.answer
		}
		close(stop)
		<-k.finished // a request in flight is counted with its reply
		k.mu.Lock()
		report(map[string]interface{}{
			"step": "keepalive", "ok": len(k.errors) == 0, "sent": k.sent,
			"answered": k.answered, "accepted": k.accepted, "errors": k.errors,
		})
		k.mu.Unlock()
	}
	report(map[string]interface{}{"step": "done", "ok": true})
}
