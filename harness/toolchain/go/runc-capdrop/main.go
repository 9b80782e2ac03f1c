// runc-capdrop: a runc wrapper for hosts whose capability bounding set lacks capabilities that
// container runtimes grant (on the VM this was written on: CAP_SYS_RESOURCE).
//
// runc fails to start a container that asks for a capability outside the bounding set ("unable to
// apply caps: operation not permitted"); a privileged container asks for all of them. This wrapper
// is registered with `dockerd --add-runtime capdrop=PATH --default-runtime capdrop` (or as
// containerd's runtime BinaryName). Before handing over to the real runc it removes, from every
// capability list, the capabilities the host's bounding set lacks: in the bundle's config.json for
// `create`/`run`, in the process spec for `exec --process FILE`. Nothing else is changed: every
// argument goes to the real runc unchanged, and on a host with a full bounding set nothing is
// rewritten at all. A container cannot hold such a capability anyway; without this wrapper it
// cannot start.
//
// The same holds for the OOM score: lowering a process's oom_score_adj needs CAP_SYS_RESOURCE, so
// runc fails a container whose spec asks for a lower `process.oomScoreAdj` than runc's own ("failed
// to update /proc/self/oom_score_adj: Permission denied"; kubelet asks -998 for every pod sandbox).
// Where CAP_SYS_RESOURCE is outside the bounding set, a lower oomScoreAdj is raised to runc's own
// value (the score the container would get without the request); a higher one is left alone.
//
// Build-time settings (-ldflags -X): main.realRunc (the runc to exec), main.statusFile (where the
// bounding set is read; tests point it at a fake /proc/self/status), main.oomFile (runc's own
// oom_score_adj, likewise).
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

var (
	realRunc   = "/usr/sbin/runc"
	statusFile = "/proc/self/status"
	oomFile    = "/proc/self/oom_score_adj"
)

// capNames are the Linux capability names by bit number (linux/capability.h).
var capNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
	"CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
	"CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
	"CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

// runc's global flags that take a value (urfave/cli: `--root X` or `--root=X`).
var valueFlags = map[string]bool{"--root": true, "--log": true, "--log-format": true, "--criu": true, "--rootless": true}

func main() {
	args := os.Args[1:]
	if err := rewrite(args); err != nil {
		fmt.Fprintf(os.Stderr, "runc-capdrop: %v\n", err)
		os.Exit(1)
	}
	argv := append([]string{realRunc}, args...)
	if err := syscall.Exec(realRunc, argv, os.Environ()); err != nil {
		fmt.Fprintf(os.Stderr, "runc-capdrop: exec %s: %v\n", realRunc, err)
		os.Exit(1)
	}
}

// missingCaps: the names of capabilities runc knows that the bounding set in status lacks.
func missingCaps(status string) (map[string]bool, error) {
	f, err := os.Open(status)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "CapBnd:") {
			continue
		}
		bnd, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(line, "CapBnd:")), 16, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: CapBnd: %v", status, err)
		}
		missing := map[string]bool{}
		for bit, name := range capNames {
			if bnd&(1<<uint(bit)) == 0 {
				missing[name] = true
			}
		}
		return missing, nil
	}
	return nil, fmt.Errorf("%s has no CapBnd line", status)
}

// command: runc's subcommand and the arguments after it.
func command(args []string) (string, []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			return a, args[i+1:]
		}
		if valueFlags[a] {
			i++ // skip the flag's value
		}
	}
	return "", nil
}

// flagValue: the value of --long/-short in a subcommand's arguments ("" if absent).
func flagValue(args []string, long, short string) string {
	for i, a := range args {
		for _, name := range []string{"--" + long, "-" + long, "-" + short, "--" + short} {
			if a == name && i+1 < len(args) {
				return args[i+1]
			}
			if strings.HasPrefix(a, name+"=") {
				return strings.TrimPrefix(a, name+"=")
			}
		}
	}
	return ""
}

func rewrite(args []string) error {
	cmd, rest := command(args)
	var file string
	var inProcess bool
	switch cmd {
	case "create", "run":
		bundle := flagValue(rest, "bundle", "b")
		if bundle == "" {
			bundle = "."
		}
		file, inProcess = filepath.Join(bundle, "config.json"), true
	case "exec":
		file = flagValue(rest, "process", "p")
		if file == "" {
			return nil // the process comes from the command line: runc uses the container's caps
		}
	default:
		return nil
	}
	missing, err := missingCaps(statusFile)
	if err != nil {
		return err
	}
	if len(missing) == 0 {
		return nil
	}
	return rewriteFile(file, inProcess, missing)
}

// rewriteFile drops missing capabilities from the OCI spec (config.json: under "process") or
// process spec (exec --process: at the top level) in file.
func rewriteFile(file string, inProcess bool, missing map[string]bool) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // keep large integers (rlimits, uids) exactly as written
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("%s: %v", file, err)
	}
	process := doc
	if inProcess {
		p, ok := doc["process"].(map[string]any)
		if !ok {
			return nil
		}
		process = p
	}
	changed := false
	if missing["CAP_SYS_RESOURCE"] {
		if raised, err := raiseOomScoreAdj(process); err != nil {
			return err
		} else if raised {
			changed = true
		}
	}
	caps, _ := process["capabilities"].(map[string]any)
	for set, v := range caps {
		list, ok := v.([]any)
		if !ok {
			continue
		}
		kept := make([]any, 0, len(list))
		for _, c := range list {
			if name, ok := c.(string); ok && missing[name] {
				changed = true
				continue
			}
			kept = append(kept, c)
		}
		caps[set] = kept
	}
	if !changed {
		return nil
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	info, err := os.Stat(file)
	if err != nil {
		return err
	}
	tmp := file + ".capdrop"
	if err := os.WriteFile(tmp, out, info.Mode().Perm()); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

// raiseOomScoreAdj sets process.oomScoreAdj to runc's own oom_score_adj when it asks for less.
func raiseOomScoreAdj(process map[string]any) (bool, error) {
	v, ok := process["oomScoreAdj"].(json.Number)
	if !ok {
		return false, nil
	}
	want, err := v.Int64()
	if err != nil {
		return false, fmt.Errorf("oomScoreAdj %q: %v", v, err)
	}
	data, err := os.ReadFile(oomFile)
	if err != nil {
		return false, err
	}
	own, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return false, fmt.Errorf("%s: %v", oomFile, err)
	}
	if want >= own {
		return false, nil
	}
	process["oomScoreAdj"] = json.Number(strconv.FormatInt(own, 10))
	return true, nil
}
