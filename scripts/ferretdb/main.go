// Command ferretdb runs FerretDB v1 with its embedded SQLite backend, for
// scrapr's test bed and the stack's MongoDB-protocol image.
//
// Usage: ferretdb -listen 127.0.0.1:27017 -dir /path/to/data [-debug-addr 127.0.0.1:6060]
//
// _id index repair: FerretDB v1.24.2 pushes an `{_id: <string>}` filter down
// to SQLite as `WHERE _ferretdb_sjson->'$._id' = ?` (find, update, delete,
// findAndModify; deletes by _id list use `IN`), but the unique index it creates
// for _id, "<table>__id_", is on `_ferretdb_sjson->"_id"`. SQLite matches
// index expressions syntactically, so every one of those statements scans the
// whole table (EXPLAIN QUERY PLAN: "SCAN", not "SEARCH ... USING INDEX").
// The wrapper replaces, in one transaction, each such "<table>__id_" index with
// a unique index of the same name on exactly the pushed-down expression (the
// same value: the top-level _id). Uniqueness, FerretDB's metadata and index
// names stay as they were; the statements become index searches.
//
// When: every database file once at start, before FerretDB opens it; then,
// while FerretDB runs, the databases named by -index-dbs (default "scrapr",
// the stack's database) every -index-every when their files changed, so
// collections created at run time are repaired too. Only those: a second
// connection open while FerretDB drops a database (it deletes the file) can
// leave the old -wal/-shm files in place for a database re-created under the
// same name at that moment, which corrupts it (seen with a drop/re-create
// loop). The stack never drops its database; tests use fresh names. The real
// fix is to build FerretDB with its pushed-down expression matching its index
// (see docs/datasource.md); then this repair finds nothing to do.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // served only with -debug-addr
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	_ "modernc.org/sqlite" // the driver FerretDB uses
)

// pushedDown is the expression FerretDB compares _id with (metadata.IDColumn).
const pushedDown = "_ferretdb_sjson->'$._id'"

// indexer repairs _id indexes. It holds no connection between passes: FerretDB
// deletes a database's file on dropDatabase, and a connection kept open on it
// would keep the old -wal/-shm files alive under the same names.
type indexer struct {
	dir  string
	dbs  []string          // database name patterns to repair (nil: all)
	seen map[string]string // file -> modification stamp of the last clean pass
	errs map[string]string // file -> last error logged
}

// stamp changes whenever the database or its WAL is written (schema included).
func stamp(file string) (string, bool) {
	st, err := os.Stat(file)
	if err != nil {
		return "", false
	}
	res := fmt.Sprintf("%d/%d", st.ModTime().UnixNano(), st.Size())
	if w, err := os.Stat(file + "-wal"); err == nil {
		res += fmt.Sprintf("/%d/%d", w.ModTime().UnixNano(), w.Size())
	}
	return res, true
}

// file repairs the _id indexes of one database file that still need it.
func (ix *indexer) file(ctx context.Context, file string) error {
	// mode=rw: never create a file FerretDB has just dropped.
	u := "file:" + (&url.URL{Path: file}).EscapedPath() + "?mode=rw&_pragma=busy_timeout(10000)"
	db, err := sql.Open("sqlite", u)
	if err != nil {
		return err
	}
	defer func() { _ = db.Close() }()
	db.SetMaxOpenConns(1)
	type index struct{ name, table string }
	var todo []index
	// FerretDB names the _id index "<table>__id_"; sql is NULL for automatic indexes.
	rows, err := db.QueryContext(ctx, `SELECT name, tbl_name, sql FROM sqlite_master
		WHERE type = 'index' AND name = tbl_name || '__id_'`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var name, table string
		var def sql.NullString
		if err = rows.Scan(&name, &table, &def); err != nil {
			_ = rows.Close()
			return err
		}
		if def.Valid && !strings.Contains(def.String, pushedDown) {
			todo = append(todo, index{name, table})
		}
	}
	_ = rows.Close()
	if err = rows.Err(); err != nil {
		return err
	}
	for _, x := range todo {
		// A table dropped since we listed it fails here; the next pass retries.
		if err = repair(ctx, db, x.name, x.table); err != nil {
			return fmt.Errorf("%s: %w", x.name, err)
		}
		log.Printf("ferretdb wrapper: %s: %s now indexes %s", filepath.Base(file), x.name, pushedDown)
	}
	return nil
}

// repair swaps one index in a single transaction, so there is no moment
// without a unique _id index.
func repair(ctx context.Context, db *sql.DB, name, table string) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err = tx.ExecContext(ctx, fmt.Sprintf(`DROP INDEX %q`, name)); err != nil {
		return err
	}
	if _, err = tx.ExecContext(ctx, fmt.Sprintf(`CREATE UNIQUE INDEX %q ON %q (%s)`, name, table, pushedDown)); err != nil {
		return err
	}
	return tx.Commit()
}

// wanted: the database file is one -index-dbs names (all of them when dbs is nil).
func (ix *indexer) wanted(file string) bool {
	if ix.dbs == nil {
		return true
	}
	name := strings.TrimSuffix(filepath.Base(file), ".sqlite")
	for _, pat := range ix.dbs {
		if ok, _ := filepath.Match(pat, name); ok {
			return true
		}
	}
	return false
}

// pass repairs every wanted database file whose stamp changed since its last clean pass.
func (ix *indexer) pass() {
	files, _ := filepath.Glob(filepath.Join(ix.dir, "*.sqlite"))
	live := map[string]bool{}
	for _, f := range files {
		if !ix.wanted(f) {
			continue
		}
		live[f] = true
		st, ok := stamp(f)
		if !ok || ix.seen[f] == st {
			continue
		}
		// Never a cancellable context for SQL: see the modernc.org/sqlite
		// interrupt leak in docs/datasource.md.
		if err := ix.file(context.Background(), f); err != nil {
			if ix.errs[f] != err.Error() {
				ix.errs[f] = err.Error()
				log.Printf("ferretdb wrapper: %s: %v (retrying)", filepath.Base(f), err)
			}
			continue
		}
		delete(ix.errs, f)
		// The stamp from before the pass: any write since (ours included)
		// brings the file back next time.
		ix.seen[f] = st
	}
	for f := range ix.seen {
		if !live[f] {
			delete(ix.seen, f)
			delete(ix.errs, f)
		}
	}
}

// lazyHandler is slog's default handler with the formatting of attributes
// added through Logger.With deferred until a record is actually written.
// Why: FerretDB's SQL layer calls With(args...) for every statement before
// its Debug call is filtered out, and the default handler formats the
// arguments (each document's JSON, quoted byte by byte) at once: ~11% of
// FerretDB's CPU under the datasource benchmark, for log lines never shown.
type lazyHandler struct {
	inner slog.Handler
	attrs []slog.Attr // added by With, not yet given to inner
}

func (h *lazyHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *lazyHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.materialize().Handle(ctx, r)
}

func (h *lazyHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	all := make([]slog.Attr, 0, len(h.attrs)+len(attrs))
	return &lazyHandler{inner: h.inner, attrs: append(append(all, h.attrs...), attrs...)}
}

func (h *lazyHandler) WithGroup(name string) slog.Handler {
	return &lazyHandler{inner: h.materialize().WithGroup(name)}
}

// materialize is the inner handler with the pending attributes applied.
func (h *lazyHandler) materialize() slog.Handler {
	if len(h.attrs) == 0 {
		return h.inner
	}
	return h.inner.WithAttrs(h.attrs)
}

// run repairs every interval until ctx ends.
func (ix *indexer) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		ix.pass()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on")
	dir := flag.String("dir", ".", "SQLite data directory")
	debugAddr := flag.String("debug-addr", "", "serve Go pprof on this address (off when empty)")
	indexEvery := flag.Duration("index-every", 250*time.Millisecond,
		"how often to repair new _id indexes of -index-dbs while running (0: only at start)")
	indexDBs := flag.String("index-dbs", "scrapr",
		"comma-separated database name patterns repaired while running (see the file comment)")
	noIndex := flag.Bool("no-index-repair", false, "leave FerretDB's _id indexes alone")
	flag.Parse()
	if *debugAddr != "" {
		go func() { log.Print(http.ListenAndServe(*debugAddr, nil)) }()
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		log.Fatal(err)
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		log.Fatal(err)
	}
	if !*noIndex {
		// Before FerretDB opens any file: no other connection can exist yet.
		(&indexer{dir: abs, seen: map[string]string{}, errs: map[string]string{}}).pass()
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs + "/",
		Logger:    slog.New(&lazyHandler{inner: slog.Default().Handler()}),
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if !*noIndex && *indexEvery > 0 && *indexDBs != "" {
		ix := &indexer{dir: abs, dbs: strings.Split(*indexDBs, ","), seen: map[string]string{},
			errs: map[string]string{}}
		go ix.run(ctx, *indexEvery)
	}
	log.Printf("ferretdb listening on %s", *listen)
	f.Run(ctx)
}
