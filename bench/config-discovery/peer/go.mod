module scrapr.local/bench/cdpeer

go 1.23.0

require (
	github.com/golang/snappy v0.0.4
	github.com/klauspost/compress v1.18.0
	github.com/montanaflynn/stats v0.7.1
	github.com/xdg-go/pbkdf2 v1.0.0
	github.com/xdg-go/scram v1.1.2
	github.com/xdg-go/stringprep v1.0.4
	github.com/youmark/pkcs8 v0.0.0-20240726163527-a2c0da244d78
	go.mongodb.org/mongo-driver v1.17.3
	golang.org/x/crypto v0.38.0
	golang.org/x/sync v0.14.0
	golang.org/x/text v0.25.0
)
