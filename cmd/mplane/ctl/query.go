package ctl

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"mplane/api/client"
)

func newListCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list <noun> [flags]",
		Short: "List resources",
		Long: "Lists resources, filtered by --q conditions (all must hold). A condition is\n" +
			"field<op>value with op one of = != > < >= <= ~= (like, % wildcard) !~= ?= (in a\n" +
			"comma list) !?=, or \"field is null\" / \"field not null\". Nouns: " + strings.Join(nounNames(listable), ", ") + ".",
		Example: "  mplane ctl list vms\n" +
			"  mplane ctl list vms --q state=Running --q 'name~=web%' --sort -createDate --limit 10\n" +
			"  mplane ctl list hosts --q 'status!=Connected' -o json\n" +
			"  mplane ctl list vms --count",
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE("noun", nounNames(listable)),
	}
	for _, n := range listable {
		cmd.AddCommand(newListNounCmd(g, n))
	}
	return cmd
}

func newListNounCmd(g *globals, n *noun) *cobra.Command {
	var q client.Query
	cmd := &cobra.Command{
		Use:     n.name + " [flags]",
		Aliases: n.aliases,
		Short:   "List " + n.plural,
		Args:    argsNone,
	}
	f := cmd.Flags()
	f.StringArrayVar(&q.Q, "q", nil, "condition field<op>value; repeat for more (all must hold)")
	f.IntVar(&q.Limit, "limit", 0, "at most this many (0: the server's default)")
	f.IntVar(&q.Start, "start", 0, "skip this many (paging with --limit)")
	f.StringVar(&q.Sort, "sort", "", "sort by a field: +field ascending, -field descending")
	f.BoolVar(&q.Count, "count", false, "print only the number of matching "+n.plural)
	f.StringSliceVar(&q.Fields, "fields", nil, "only these fields (comma list); the table shows them as columns")
	cmd.RunE = runE(g, func(r *invocation, _ []string) error {
		if q.Limit < 0 || q.Start < 0 {
			return usageError("--limit and --start must not be negative")
		}
		q.ReplyWithCount = q.Limit > 0 && !q.Count
		invs, total, err := r.c.Query(r.ctx(), n.path, q)
		if err != nil {
			return err
		}
		if q.Count {
			if r.json {
				return printJSON(r.out, map[string]int{"total": total})
			}
			fmt.Fprintln(r.out, total)
			return nil
		}
		if r.json {
			out := struct {
				Inventories []json.RawMessage `json:"inventories"`
				Total       *int              `json:"total,omitempty"`
			}{Inventories: invs}
			if out.Inventories == nil {
				out.Inventories = []json.RawMessage{}
			}
			if q.ReplyWithCount {
				out.Total = &total
			}
			return printJSON(r.out, out)
		}
		rows := make([]inventory, 0, len(invs))
		for _, raw := range invs {
			inv, err := decodeInventory(raw)
			if err != nil {
				return err
			}
			rows = append(rows, inv)
		}
		cols := n.columns
		if len(q.Fields) > 0 {
			cols = genericColumns(q.Fields...)
		}
		if err := printTable(r.out, cols, rows); err != nil {
			return err
		}
		if q.ReplyWithCount && total > q.Start+len(rows) {
			fmt.Fprintf(r.errOut, "(%d-%d of %d %s; --start %d for more)\n", q.Start+1, q.Start+len(rows), total, n.plural, q.Start+len(rows))
		}
		return nil
	})
	return cmd
}

func newGetCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get <noun> <uuid>",
		Short: "Show one resource",
		Long:  "Shows one resource as a table row, or its whole inventory with -o json. Nouns: " + strings.Join(nounNames(listable), ", ") + ".",
		Example: "  mplane ctl get vm 2f1e0b6c8a7d4e0f9b3c5d7e9f1a2b3c\n" +
			"  mplane ctl get host 5a4b... -o json",
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE("noun", nounNames(listable)),
	}
	for _, n := range listable {
		cmd.AddCommand(&cobra.Command{
			Use:     n.name + " <uuid>",
			Aliases: n.aliases,
			Short:   "Show one of the " + n.plural,
			Args:    argsUUID(n.name + " UUID"),
			RunE: runE(g, func(r *invocation, args []string) error {
				raw, err := r.c.Get(r.ctx(), n.path, args[0])
				if err != nil {
					return err
				}
				return r.renderOne(n, raw)
			}),
		})
	}
	return cmd
}
