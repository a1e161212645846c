// tsf-cnitool drives CNI plugins through Debian's libcni, the same library
// podman 4 and CRI-O use, so tests see exactly what a runtime sends: config
// loading, capability filtering, prevResult injection and the result cache.
//
//	tsf-cnitool add|check|del <netname> <netns-path>
//
// Environment: NETCONFPATH, CNI_PATH, CNI_IFNAME, CNI_ARGS, CAP_ARGS,
// CNI_CONTAINERID (override of the netns-derived id) and CNI_CACHE_DIR.
// Debian's libcni (1.1.2) predates GC and STATUS, so those verbs are absent.
package main

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

const (
	defaultConfDir = "/etc/cni/net.d"
	defaultIfName  = "eth0"
	usage          = "usage: tsf-cnitool add|check|del <netname> <netns-path>"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		report(err)
		os.Exit(1)
	}
}

// report keeps a plugin's CNI error machine-readable on stdout (as a plugin
// itself would print it) and always gives a human line on stderr, so a test
// can assert on the error code and a person can read the wrapped context.
func report(err error) {
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		if out, mErr := json.MarshalIndent(cniErr, "", "    "); mErr == nil {
			fmt.Fprintln(os.Stdout, string(out))
		}
	}
	fmt.Fprintln(os.Stderr, "tsf-cnitool:", err)
}

func run(args []string) error {
	if len(args) != 3 {
		return errors.New(usage)
	}
	verb, netName, netns := args[0], args[1], args[2]
	if verb != "add" && verb != "check" && verb != "del" {
		return fmt.Errorf("unknown command %q; %s", verb, usage)
	}

	list, err := libcni.LoadConfList(envOr("NETCONFPATH", defaultConfDir), netName)
	if err != nil {
		return err
	}
	rt, err := runtimeConf(netns)
	if err != nil {
		return err
	}
	cni := libcni.NewCNIConfigWithCacheDir(
		filepath.SplitList(os.Getenv("CNI_PATH")), os.Getenv("CNI_CACHE_DIR"), nil)

	ctx := context.Background()
	switch verb {
	case "add":
		result, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		return printResult(result)
	case "check":
		return cni.CheckNetworkList(ctx, list, rt)
	default:
		return cni.DelNetworkList(ctx, list, rt)
	}
}

func runtimeConf(netns string) (*libcni.RuntimeConf, error) {
	// The id is derived from the absolute path, so relative and absolute
	// spellings of one netns share one cache entry, as with upstream cnitool.
	abs, err := filepath.Abs(netns)
	if err != nil {
		return nil, fmt.Errorf("netns path %q: %w", netns, err)
	}
	cniArgs, err := parseCniArgs(os.Getenv("CNI_ARGS"))
	if err != nil {
		return nil, err
	}
	capArgs, err := parseCapArgs(os.Getenv("CAP_ARGS"))
	if err != nil {
		return nil, err
	}
	return &libcni.RuntimeConf{
		ContainerID:    envOr("CNI_CONTAINERID", containerIDFor(abs)),
		NetNS:          abs,
		IfName:         envOr("CNI_IFNAME", defaultIfName),
		Args:           cniArgs,
		CapabilityArgs: capArgs,
	}, nil
}

// containerIDFor matches upstream cnitool's id so cache file names line up
// with what a real cnitool run on the same netns would produce.
func containerIDFor(absNetns string) string {
	sum := sha512.Sum512([]byte(absNetns))
	return "cnitool-" + hex.EncodeToString(sum[:10])
}

func parseCniArgs(raw string) ([][2]string, error) {
	if raw == "" {
		return nil, nil
	}
	var pairs [][2]string
	for _, item := range strings.Split(raw, ";") {
		kv := strings.SplitN(item, "=", 2)
		if len(kv) != 2 || kv[0] == "" || kv[1] == "" {
			return nil, fmt.Errorf("invalid CNI_ARGS pair %q", item)
		}
		pairs = append(pairs, [2]string{kv[0], kv[1]})
	}
	return pairs, nil
}

func parseCapArgs(raw string) (map[string]interface{}, error) {
	if raw == "" {
		return nil, nil
	}
	var caps map[string]interface{}
	if err := json.Unmarshal([]byte(raw), &caps); err != nil {
		return nil, fmt.Errorf("CAP_ARGS must be a JSON object: %w", err)
	}
	return caps, nil
}

func printResult(result types.Result) error {
	out, err := json.MarshalIndent(result, "", "    ")
	if err != nil {
		return fmt.Errorf("encoding result: %w", err)
	}
	_, err = fmt.Fprintln(os.Stdout, string(out))
	return err
}

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}
