package inspect

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"
)

// Client queries a helper's status socket.
type Client struct {
	http *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{http: &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
		},
	}}
}

func (c *Client) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://sluice"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("query sluice-helperd: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("sluice-helperd answered %s", resp.Status)
	}
	return json.Unmarshal(body, v)
}

// Egresses lists the Egresses.
func (c *Client) Egresses(ctx context.Context) ([]EgressRow, error) {
	var v []EgressRow
	return v, c.get(ctx, "/v1/egresses", &v)
}

// Pods lists the local Pods.
func (c *Client) Pods(ctx context.Context) ([]PodRow, error) {
	var v []PodRow
	return v, c.get(ctx, "/v1/pods", &v)
}

// Datapath lists the installed kernel objects.
func (c *Client) Datapath(ctx context.Context) (DatapathReport, error) {
	var v DatapathReport
	return v, c.get(ctx, "/v1/datapath", &v)
}

// Explain describes one Pod's path.
func (c *Client) Explain(ctx context.Context, namespace, name string) (Explanation, error) {
	var v Explanation
	return v, c.get(ctx, "/v1/explain/"+url.PathEscape(namespace)+"/"+url.PathEscape(name), &v)
}

// CLIUsage is printed for `sluice-helperd help`.
const CLIUsage = `sluice-helperd CLI: query the helper on this Node.

  sluice-helperd egresses  [-o json]        Egresses: IP, Node, Pods selected here and cluster-wide
  sluice-helperd pods      [-o json]        local Pods and the Egress that applies to each
  sluice-helperd datapath  [-o json]        installed kernel objects with packet and byte counters
  sluice-helperd explain NAMESPACE/POD [-o json]   one Pod's whole egress path

Flags: --status-socket PATH (default ` + DefaultSocket + `)
`

// DefaultSocket is where the helper serves the CLI.
const DefaultSocket = "/var/run/sluice/status.sock"

// RunCLI runs one CLI command and writes its output to w.
func RunCLI(ctx context.Context, cmd string, args []string, w io.Writer) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	socket := fs.String("status-socket", DefaultSocket, "status socket of sluice-helperd")
	output := fs.String("o", "table", "output format: table or json")
	// Accept flags before and after the positional argument.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return fmt.Errorf("%s: %w\n\n%s", cmd, err, CLIUsage)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("-o: %q is not table or json", *output)
	}
	c := NewClient(*socket)
	var v any
	var err error
	switch cmd {
	case "egresses":
		v, err = c.Egresses(ctx)
	case "pods":
		v, err = c.Pods(ctx)
	case "datapath":
		v, err = c.Datapath(ctx)
	case "explain":
		if len(pos) != 1 || !strings.Contains(pos[0], "/") {
			return fmt.Errorf("explain: want NAMESPACE/POD, got %q", strings.Join(pos, " "))
		}
		ns, name, _ := strings.Cut(pos[0], "/")
		v, err = c.Explain(ctx, ns, name)
	default:
		return fmt.Errorf("unknown command %q\n\n%s", cmd, CLIUsage)
	}
	if err != nil {
		return err
	}
	if *output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return Render(w, v)
}

// Render prints a reply as aligned tables.
func Render(w io.Writer, v any) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	switch v := v.(type) {
	case []EgressRow:
		fmt.Fprintln(tw, "NAME\tEGRESSIP\tPOOL\tNODE\tHELD-HERE\tPODS-HERE\tPODS-CLUSTER\tMARK\tTABLE\tNOTE")
		for _, e := range v {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%t\t%d\t%d\t%s\t%s\t%s\n", e.Name, dash(e.EgressIP), dash(e.Pool),
				dash(e.Node), e.HeldHere, e.PodsHere, e.PodsCluster, dash(e.Mark), dashInt(e.Table), noteOf(e))
		}
	case []PodRow:
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tIPS\tVETH\tEGRESS\tALSO-SELECTED-BY")
		for _, p := range v {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Namespace, p.Name, dash(strings.Join(p.IPs, ",")),
				dash(p.HostVeth), dash(p.Egress), dash(strings.Join(p.Losers, ",")))
		}
	case DatapathReport:
		fmt.Fprintf(tw, "Node:\t%s\nTunnel:\t%s\nHeld IPs:\t%s\n\n", v.Node, v.Tunnel, dash(strings.Join(v.HeldIPs, ", ")))
		section(tw, "IP RULES", v.Rules)
		section(tw, "ROUTES", v.Routes)
		section(tw, "IPSETS", v.IPSets)
		fmt.Fprintln(tw, "OBJECT\tPACKETS\tBYTES\tDETAIL")
		for _, c := range v.Counters {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", c.Object, c.Packets, c.Bytes, c.Detail)
		}
	case Explanation:
		fmt.Fprintf(tw, "Pod:\t%s/%s on %s (%s)\n", v.Namespace, v.Name, v.Node, strings.Join(v.PodIPs, ", "))
		fmt.Fprintf(tw, "Egress:\t%s\n", dash(v.Egress))
		for _, why := range v.Why {
			fmt.Fprintf(tw, "  why:\t%s\n", why)
		}
		fmt.Fprintf(tw, "Egress IP:\t%s\nEgress Node:\t%s\nPath:\t%s\n", dash(v.EgressIP), dash(v.EgressNode), v.Path)
		fmt.Fprintf(tw, "Mark:\t%s\nTable:\t%s\nTunnel peer:\t%s\nSNAT to:\t%s\n", dash(v.Mark), dashInt(v.Table),
			dash(v.TunnelPeer), dash(v.SNATIP))
		for _, c := range v.Counters {
			fmt.Fprintf(tw, "  counter:\t%s\t%d pkts\t%d bytes\n", c.Object, c.Packets, c.Bytes)
		}
	default:
		return fmt.Errorf("cannot render %T", v)
	}
	return nil
}

func section(tw *tabwriter.Writer, title string, lines []string) {
	fmt.Fprintln(tw, title)
	for _, l := range lines {
		fmt.Fprintf(tw, "  %s\n", l)
	}
	fmt.Fprintln(tw)
}

func noteOf(e EgressRow) string {
	var parts []string
	if e.ConditionsNote != "" {
		parts = append(parts, e.ConditionsNote)
	}
	if len(e.OverlapLosers) > 0 {
		parts = append(parts, "outranked for: "+strings.Join(e.OverlapLosers, ","))
	}
	return dash(strings.Join(parts, "; "))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func dashInt(i int) string {
	if i == 0 {
		return "-"
	}
	return fmt.Sprint(i)
}
