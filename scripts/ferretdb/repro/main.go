// Command repro shows the modernc.org/sqlite v1.32.0 behaviour behind
// FerretDB's "interrupted (9)" stall (docs/datasource.md): queries whose
// context ends right as their first step succeeds leave an active statement
// on a pooled connection; afterwards statements *without* any deadline keep
// failing with "interrupted (9)" on that connection.
//
// Build it like scripts/deps.sh builds the wrapper (same driver version):
//
//	d=$(mktemp -d) && cp scripts/ferretdb/repro/main.go "$d" && cd "$d" &&
//	go mod init repro && go get modernc.org/sqlite@v1.32.0 && go run .
//
// Measured on the 2-core test box: ~1,000,000 failing innocent statements in
// the 3 s after the last deadline-bound query ended.
package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite"
)

func main() {
	dir, _ := os.MkdirTemp("", "repro")
	db, err := sql.Open("sqlite", "file:"+dir+"/x.sqlite?_pragma=busy_timeout(10000)&_pragma=journal_mode(wal)")
	if err != nil {
		panic(err)
	}
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	must(db.Exec("CREATE TABLE t (v INTEGER)"))
	must(db.Exec("CREATE TABLE c (n INTEGER)"))
	must(db.Exec("INSERT INTO c VALUES (0)"))
	for i := 0; i < 2000; i++ {
		must(db.Exec("INSERT INTO t VALUES (?)", i))
	}
	var interrupted, stale, ctxErrs, writesBusy, afterErrs atomic.Int64
	stop := time.Now().Add(3 * time.Second)
	// Like FerretDB's awaitData: queries with a short deadline, over and over.
	for w := 0; w < 4; w++ {
		go func() {
			for time.Now().Before(stop) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(50+time.Now().UnixNano()%400)*time.Microsecond)
				rows, err := db.QueryContext(ctx, "SELECT v FROM t ORDER BY v")
				if err == nil {
					rows.Close()
				} else {
					ctxErrs.Add(1)
				}
				cancel()
			}
		}()
	}
	// Innocent clients: a counter incremented and read back, no deadlines;
	// they keep going 3 s after the deadline-bound queries stopped.
	var want int64
	var after atomic.Int64
	end := stop.Add(3 * time.Second)
	for time.Now().Before(end) {
		if time.Now().After(stop.Add(100 * time.Millisecond)) {
			after.Store(1)
		}
		if _, err := db.Exec("UPDATE c SET n = n + 1"); err != nil {
			if strings.Contains(err.Error(), "interrupted") {
				interrupted.Add(1)
				if after.Load() == 1 {
					afterErrs.Add(1)
				}
			} else {
				writesBusy.Add(1)
			}
			continue
		}
		want++
		var n int64
		if err := db.QueryRow("SELECT n FROM c").Scan(&n); err != nil {
			if strings.Contains(err.Error(), "interrupted") {
				interrupted.Add(1)
			}
			continue
		}
		if n != want {
			stale.Add(1)
			want = n
		}
	}
	fmt.Printf("deadline-bound queries cancelled: %d\ninnocent statements failing 'interrupted (9)': %d\nstale counter reads: %d\nother write errors (e.g. database is locked (517)): %d\n",
		ctxErrs.Load(), interrupted.Load(), stale.Load(), writesBusy.Load())
	fmt.Printf("of which after every deadline-bound query had ended: %d\n", afterErrs.Load())
	os.RemoveAll(dir)
}

func must(_ sql.Result, err error) {
	if err != nil {
		panic(err)
	}
}
