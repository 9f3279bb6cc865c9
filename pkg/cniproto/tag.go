package cniproto

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// The tag is the link alias (IFLA_IFALIAS) the plugin puts on a Pod's host
// veth, so that a restarted helper can rebuild every attachment from the
// kernel alone. Format, fields separated by ':' (none of the first six may
// contain one; IPv6 addresses may, so the IP list comes last):
//
//	sluice:1:<containerID>:<ifname>:<podNamespace>/<podName>:<podUID>:<ip>[,<ip>]
//
// podUID is stored without its dashes (32 hex digits). The kernel accepts
// aliases up to MaxTagLen bytes. When an attachment does not fit, the pod
// name and then the namespace are left out (the helper can find them from
// the UID through the API server), then the UID, then the IPs; only the
// key is never dropped (the helper still gets everything over the socket).
const (
	tagPrefix = "sluice:1:"
	// MaxTagLen is IFALIASZ-1: the kernel refuses longer aliases.
	MaxTagLen = 255
)

// IsTag tells whether a link alias is a sluice tag.
func IsTag(alias string) bool { return strings.HasPrefix(alias, tagPrefix) }

// FormatTag encodes a's identity for the link alias.
func FormatTag(a Attachment) (string, error) {
	if err := a.Key.Validate(); err != nil {
		return "", err
	}
	uid := strings.ReplaceAll(a.PodUID, "-", "")
	for _, f := range []string{a.PodNamespace, a.PodName, uid} {
		if strings.ContainsAny(f, ":/") {
			return "", fmt.Errorf("pod field %q contains ':' or '/'", f)
		}
	}
	ips := strings.Join(a.PodIPs, ",")
	build := func(ns, name, uid, ips string) string {
		return tagPrefix + a.ContainerID + ":" + a.IfName + ":" + ns + "/" + name + ":" + uid + ":" + ips
	}
	for _, t := range []string{
		build(a.PodNamespace, a.PodName, uid, ips),
		build(a.PodNamespace, "", uid, ips),
		build("", "", uid, ips),
		build("", "", "", ips),
		build("", "", "", ""),
	} {
		if len(t) <= MaxTagLen {
			return t, nil
		}
	}
	return "", fmt.Errorf("tag for %s does not fit in %d bytes", a.Key, MaxTagLen)
}

// ParseTag decodes a tag written by FormatTag. Netns and the host veth are
// not in the tag; the caller knows the link it read the alias from.
func ParseTag(alias string) (Attachment, error) {
	if !IsTag(alias) {
		return Attachment{}, errors.New("not a sluice tag")
	}
	f := strings.SplitN(strings.TrimPrefix(alias, tagPrefix), ":", 5)
	if len(f) != 5 {
		return Attachment{}, fmt.Errorf("tag %q: want 5 fields, got %d", alias, len(f))
	}
	ns, name, ok := strings.Cut(f[2], "/")
	if !ok {
		return Attachment{}, fmt.Errorf("tag %q: pod field without '/'", alias)
	}
	a := Attachment{
		Key:          Key{ContainerID: f[0], IfName: f[1]},
		PodNamespace: ns,
		PodName:      name,
		PodUID:       dashUID(f[3]),
	}
	if f[4] != "" {
		a.PodIPs = strings.Split(f[4], ",")
	}
	if err := a.Validate(); err != nil {
		return Attachment{}, fmt.Errorf("tag %q: %w", alias, err)
	}
	return a, nil
}

// dashUID restores the 8-4-4-4-12 form of a UID stored without dashes.
func dashUID(s string) string {
	if len(s) != 32 {
		return s
	}
	return s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}

// IPOnly strips a prefix length: prevResult carries "10.244.0.5/24".
func IPOnly(cidr string) string {
	if ip, _, err := net.ParseCIDR(cidr); err == nil {
		return ip.String()
	}
	return cidr
}
