package plugin

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"
)

// Width is the terminal width the text output fits: no line of it is
// longer, whatever the names, messages and URLs it shows (longer values
// are cut with "…"; -o json and -o yaml carry them whole).
const Width = 80

// Format is an output format: the text for people, or JSON or YAML of the
// command's report struct for scripts.
type Format string

const (
	// FormatText is the default, for a terminal.
	FormatText Format = "text"
	// FormatJSON is the report as indented JSON.
	FormatJSON Format = "json"
	// FormatYAML is the report as YAML (the same field names as JSON).
	FormatYAML Format = "yaml"
)

// ParseFormat reads the value of -o/--output: "" is text.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(s)); f {
	case "", FormatText:
		return FormatText, nil
	case FormatJSON, FormatYAML:
		return f, nil
	}
	return "", fmt.Errorf("output format %q is not supported: use text, json or yaml", s)
}

// Report is what a command prints: a struct with stable JSON field names,
// and its text form.
type Report interface {
	// writeText writes the report for a terminal of Width columns; now is
	// the time ages are counted from.
	writeText(t *text, now time.Time)
}

// Print writes r to w in format; now is the time the text form counts
// ages from (the JSON and YAML forms carry timestamps only).
func Print(w io.Writer, format Format, r Report, now time.Time) error {
	switch format {
	case FormatJSON:
		out, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return fmt.Errorf("encoding the report as JSON: %w", err)
		}
		_, err = w.Write(append(out, '\n'))
		return err
	case FormatYAML:
		out, err := yaml.Marshal(r)
		if err != nil {
			return fmt.Errorf("encoding the report as YAML: %w", err)
		}
		_, err = w.Write(out)
		return err
	}
	t := &text{}
	r.writeText(t, now)
	_, err := io.WriteString(w, t.b.String())
	return err
}

// text builds the text form line by line, each line cut to Width.
type text struct {
	b strings.Builder
}

// line writes one line, cut to Width. Control characters that come with
// the objects' text (a newline in a message, a tab, a terminal escape)
// are shown as spaces, so that one call is one line and the terminal
// shows what the object holds rather than obeying it.
func (t *text) line(format string, args ...any) {
	s := strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, fmt.Sprintf(format, args...))
	t.b.WriteString(fit(s, Width))
	t.b.WriteByte('\n')
}

// field writes "key: value" with the value wrapped at word boundaries
// under itself, the key padded to keyWidth; an empty key continues the
// field above.
func (t *text) field(key, value string) {
	label := strings.Repeat(" ", keyWidth)
	if key != "" {
		label = fmt.Sprintf("%-*s", keyWidth, key+":")
	}
	lines := wrap(value, Width-keyWidth)
	if len(lines) == 0 {
		lines = []string{""}
	}
	for i, l := range lines {
		if i > 0 {
			label = strings.Repeat(" ", keyWidth)
		}
		t.line("%s%s", label, l)
	}
}

// items writes a field of several values, each a wrapped item that starts
// with "- ".
func (t *text) items(key string, values []string) {
	for i, v := range values {
		label := strings.Repeat(" ", keyWidth)
		if i == 0 {
			label = fmt.Sprintf("%-*s", keyWidth, key+":")
		}
		for j, l := range wrap(v, Width-keyWidth-2) {
			bullet := "- "
			if j > 0 {
				label, bullet = strings.Repeat(" ", keyWidth), "  "
			}
			t.line("%s%s%s", label, bullet, l)
		}
	}
}

// table writes rows as aligned columns two spaces apart, after indent.
// Every column but the last is at most maxColumn wide; the last one gets
// what is left of the line.
func (t *text) table(indent string, rows [][]string) {
	for _, l := range columns(rows, Width-runes(indent)) {
		t.line("%s%s", indent, l)
	}
}

// keyWidth is the width of the keys of the text form's "key: value"
// lines: the values line up after it.
const keyWidth = 19

// maxColumn bounds the width of a table column other than the last.
const maxColumn = 28

// columns aligns rows into lines at most width wide.
func columns(rows [][]string, width int) []string {
	var widths []int
	for _, row := range rows {
		for i, cell := range row {
			if i == len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], min(runes(cell), maxColumn))
		}
	}
	lines := make([]string, 0, len(rows))
	for _, row := range rows {
		var b strings.Builder
		for i, cell := range row {
			if i == len(row)-1 {
				b.WriteString(cell)
				break
			}
			cell = fit(cell, widths[i])
			b.WriteString(cell)
			b.WriteString(strings.Repeat(" ", widths[i]-runes(cell)+2))
		}
		lines = append(lines, fit(strings.TrimRight(b.String(), " "), width))
	}
	return lines
}

// treeNode is one node of a tree in the text form: its lines (the first
// after the branch, the others under it) and its children.
type treeNode struct {
	lines    []string
	children []treeNode
}

// writeTree writes nodes as branches of a tree below the current line,
// prefix being what the enclosing levels draw in front of each line.
func (t *text) writeTree(prefix string, nodes []treeNode) {
	for i, n := range nodes {
		branch, under := "├── ", "│   "
		if i == len(nodes)-1 {
			branch, under = "└── ", "    "
		}
		for j, l := range n.lines {
			if j == 0 {
				t.line("%s%s%s", prefix, branch, l)
			} else {
				t.line("%s%s%s", prefix, under, l)
			}
		}
		t.writeTree(prefix+under, n.children)
	}
}

// runes is the display width of s: one column per rune (the names and
// messages shown are Latin text).
func runes(s string) int { return utf8.RuneCountInString(s) }

// fit returns s cut to width runes, ending in "…" when cut.
func fit(s string, width int) string {
	if runes(s) <= width {
		return s
	}
	if width <= 0 {
		return ""
	}
	r := []rune(s)
	return string(r[:width-1]) + "…"
}

// wrap breaks s into lines of at most width runes at spaces; a word
// longer than width is cut.
func wrap(s string, width int) []string {
	var lines []string
	var cur string
	for _, word := range strings.Fields(s) {
		switch {
		case cur == "":
			cur = word
		case runes(cur)+1+runes(word) <= width:
			cur += " " + word
		default:
			lines = append(lines, fit(cur, width))
			cur = word
		}
	}
	if cur != "" {
		lines = append(lines, fit(cur, width))
	}
	return lines
}

// when formats a time for the text form: UTC to the second and its age,
// "never" for none.
func when(t *metav1.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return "never"
	}
	d := now.Sub(t.Time)
	age := duration.HumanDuration(d) + " ago"
	if d < 0 {
		age = "in " + duration.HumanDuration(-d)
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC") + " (" + age + ")"
}

// orNone returns s, or "(none)" when it is empty.
func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// joinOr joins names with ", ", or returns "(none)".
func joinOr(names []string) string {
	return orNone(strings.Join(names, ", "))
}

// bytesText formats a size in binary units: "512 B", "1.5 GiB".
func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
