package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// ErrS3Config is wrapped by every error about an S3Config field.
var ErrS3Config = errors.New("checkpoint: invalid S3 config")

// Multipart limits of S3: parts of 5 MiB to 5 GiB, at most 10000 of them.
const (
	minPartSize     = 5 << 20
	maxPartSize     = 5 << 30
	maxParts        = 10000
	DefaultPartSize = 32 << 20 // bytes per part unless S3Config.PartSize says otherwise
)

// abortTimeout bounds the clean-up of a failed multipart upload.
const abortTimeout = 30 * time.Second

// S3Config says how to reach a bucket of an S3-compatible server. Empty fields fall back to
// the environment variables AWS SDKs read, then to defaults.
type S3Config struct {
	// Endpoint is host[:port], or http://host[:port] / https://host[:port], which override
	// Secure. "" means $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, else https://s3.amazonaws.com.
	Endpoint string
	// Bucket must exist already.
	Bucket string
	// Prefix, if set, is put before every key ("jobs" stores key "a/b" as "jobs/a/b").
	Prefix string
	// Region "" means $AWS_REGION, $AWS_DEFAULT_REGION, else the server is asked.
	Region string
	// AccessKey, SecretKey and SessionToken: "" means the usual credential chain:
	// $AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY / $AWS_SESSION_TOKEN, $MINIO_ROOT_USER /
	// $MINIO_ROOT_PASSWORD, ~/.aws/credentials, then EC2/ECS/EKS instance roles.
	AccessKey, SecretKey, SessionToken string
	// Secure selects https for an Endpoint given without a scheme.
	Secure bool
	// PartSize is the size of multipart parts in bytes: 0 means DefaultPartSize, otherwise
	// 5 MiB to 5 GiB. Objects up to PartSize go up in one request; Put buffers one part in
	// memory for readers that cannot seek. A Put of unknown size is limited to 10000 parts.
	PartSize int64
	// MaxRetries is the number of attempts per request, counting the first: 0 means 10,
	// 1 disables retries. Failed requests (connection errors, timeouts, 5xx, throttling) are
	// retried with jittered exponential backoff of up to 1 s between attempts.
	MaxRetries int
	// Transport carries the HTTP requests; nil means a default with a 30 s dial timeout and
	// a 1 min response-header timeout.
	Transport http.RoundTripper
}

// Validate reports the first field out of range, as an error wrapping ErrS3Config.
func (c S3Config) Validate() error {
	switch {
	case c.Bucket == "":
		return fmt.Errorf("%w: Bucket is empty", ErrS3Config)
	case c.PartSize != 0 && (c.PartSize < minPartSize || c.PartSize > maxPartSize):
		return fmt.Errorf("%w: PartSize %d outside [%d, %d] (or 0 for %d)", ErrS3Config, c.PartSize, minPartSize, maxPartSize, DefaultPartSize)
	case c.MaxRetries < 0:
		return fmt.Errorf("%w: MaxRetries %d is negative (0 for the default of 10)", ErrS3Config, c.MaxRetries)
	case c.AccessKey != "" && c.SecretKey == "":
		return fmt.Errorf("%w: AccessKey set without SecretKey", ErrS3Config)
	}
	if p := strings.TrimSuffix(c.Prefix, "/"); p != "" {
		if err := CheckKey(p); err != nil {
			return fmt.Errorf("%w: Prefix %q: %w", ErrS3Config, c.Prefix, err)
		}
	}
	return nil
}

// S3Store is an ObjectStore over one bucket (and optional key prefix) of an S3-compatible
// server, through minio-go.
//
// Put sends objects up to the part size in one request and larger ones as a multipart
// upload; both become visible only when complete. Each request is retried on its own (see
// S3Config.MaxRetries): parts are held in memory or re-read through io.ReaderAt, so a server
// restarted during an upload costs retries, not the upload. When a multipart Put fails, its
// incomplete uploads of that key are aborted (so two writers must not Put the same key at
// once, which checkpoints never do); should the server be unreachable then, the parts stay
// invisible until a bucket lifecycle rule removes them.
type S3Store struct {
	core     *minio.Core
	bucket   string
	prefix   string // "" or ending in "/"
	partSize int64
}

var _ ObjectStore = (*S3Store)(nil)

// NewS3Store connects to the bucket of cfg and checks that it exists.
func NewS3Store(ctx context.Context, cfg S3Config) (*S3Store, error) {
	cfg = cfg.fromEnv()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	host, secure, err := parseEndpoint(cfg.Endpoint, cfg.Secure)
	if err != nil {
		return nil, err
	}
	core, err := minio.NewCore(host, &minio.Options{
		Creds:      cfg.credentials(),
		Secure:     secure,
		Region:     cfg.Region,
		MaxRetries: cfg.MaxRetries,
		Transport:  cfg.Transport,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: endpoint %q: %w", ErrS3Config, cfg.Endpoint, err)
	}
	s := &S3Store{core: core, bucket: cfg.Bucket, partSize: cfg.PartSize}
	if p := strings.TrimSuffix(cfg.Prefix, "/"); p != "" {
		s.prefix = p + "/"
	}
	ok, err := core.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: s3 bucket %s at %s: %w", cfg.Bucket, host, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s at %s", ErrBucketNotFound, cfg.Bucket, host)
	}
	return s, nil
}

// fromEnv fills empty fields from the environment and defaults.
func (c S3Config) fromEnv() S3Config {
	c.Endpoint = firstNonEmpty(c.Endpoint, os.Getenv("AWS_ENDPOINT_URL_S3"), os.Getenv("AWS_ENDPOINT_URL"), "https://s3.amazonaws.com")
	c.Region = firstNonEmpty(c.Region, os.Getenv("AWS_REGION"), os.Getenv("AWS_DEFAULT_REGION"))
	if c.PartSize == 0 {
		c.PartSize = DefaultPartSize
	}
	return c
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func (c S3Config) credentials() *credentials.Credentials {
	if c.AccessKey != "" {
		return credentials.NewStaticV4(c.AccessKey, c.SecretKey, c.SessionToken)
	}
	return credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{},
		&credentials.EnvMinio{},
		&credentials.FileAWSCredentials{},
		&credentials.IAM{},
	})
}

// parseEndpoint splits an endpoint into host[:port] and whether to use TLS.
func parseEndpoint(endpoint string, secure bool) (string, bool, error) {
	if !strings.Contains(endpoint, "://") {
		return endpoint, secure, nil
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", false, fmt.Errorf("%w: Endpoint %q: %w", ErrS3Config, endpoint, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" {
		return "", false, fmt.Errorf("%w: Endpoint %q: want host[:port] or http(s)://host[:port]", ErrS3Config, endpoint)
	}
	return u.Host, u.Scheme == "https", nil
}

// String returns the store's location as s3://bucket/prefix.
func (s *S3Store) String() string { return "s3://" + s.bucket + "/" + s.prefix }

// where names an object for error messages.
func (s *S3Store) where(key string) string {
	return fmt.Sprintf("%q in %s", key, s)
}

// wrap turns a minio error into one of this package's.
func (s *S3Store) wrap(op, key string, err error) error {
	switch minio.ToErrorResponse(err).Code {
	case minio.NoSuchKey:
		return fmt.Errorf("%w: %s", ErrNotFound, s.where(key))
	case minio.NoSuchBucket:
		return fmt.Errorf("%w: %s (%s %q)", ErrBucketNotFound, s.bucket, op, key)
	}
	return fmt.Errorf("checkpoint: %s %s: %w", op, s.where(key), err)
}

// Put implements ObjectStore.
func (s *S3Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("checkpoint: put %s: %w", s.where(key), err)
	}
	if size >= 0 && size <= s.partSize {
		data, _, err := readSized(ctx, key, r, size, 0)
		if err != nil {
			return err
		}
		return s.putBytes(ctx, key, data)
	}
	if size < 0 {
		head, more, err := readSized(ctx, key, r, -1, s.partSize)
		if err != nil {
			return err
		}
		if !more {
			return s.putBytes(ctx, key, head)
		}
		return s.putMultipart(ctx, key, io.MultiReader(bytes.NewReader(head), r), -1)
	}
	body, err := sizedBody(key, r, size)
	if err != nil {
		return err
	}
	return s.putMultipart(ctx, key, body, size)
}

// sizedBody returns r as a reader of exactly size bytes. Readers that can seek and ReadAt
// (files, bytes.Reader) become section readers, which minio re-reads on retries and uploads
// in parallel; r is then left at its end, as if read. Others, and files that cannot seek
// (pipes), go through exactReader, and minio buffers each part.
func sizedBody(key string, r io.Reader, size int64) (io.Reader, error) {
	ra, isReaderAt := r.(io.ReaderAt)
	sk, isSeeker := r.(io.Seeker)
	if isReaderAt && isSeeker {
		if cur, err := sk.Seek(0, io.SeekCurrent); err == nil {
			end, err := sk.Seek(0, io.SeekEnd)
			if err != nil {
				return nil, fmt.Errorf("checkpoint: put %q: %w", key, err)
			}
			if end-cur != size {
				return nil, sizeError(key, size, end-cur)
			}
			return io.NewSectionReader(ra, cur, size), nil
		}
	}
	return &exactReader{key: key, r: r, size: size}, nil
}

func (s *S3Store) putBytes(ctx context.Context, key string, data []byte) error {
	_, err := s.core.Client.PutObject(ctx, s.bucket, s.prefix+key, bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{ContentType: "application/octet-stream", PartSize: uint64(s.partSize)})
	if err != nil {
		return s.wrap("put", key, err)
	}
	return nil
}

func (s *S3Store) putMultipart(ctx context.Context, key string, body io.Reader, size int64) error {
	partSize := s.partSize
	if size > partSize*maxParts {
		partSize = (size/maxParts + 1 + 1<<20 - 1) &^ (1<<20 - 1) // whole MiB, 10000 parts at most
	}
	_, err := s.core.Client.PutObject(ctx, s.bucket, s.prefix+key, body, size,
		minio.PutObjectOptions{ContentType: "application/octet-stream", PartSize: uint64(partSize)})
	if err == nil {
		return nil
	}
	err = s.wrap("put", key, err)
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	if aerr := s.core.RemoveIncompleteUpload(actx, s.bucket, s.prefix+key); aerr != nil {
		err = errors.Join(err, fmt.Errorf("checkpoint: aborting incomplete upload of %s: %w", s.where(key), aerr))
	}
	return err
}

// Get implements ObjectStore.
func (s *S3Store) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	if off < 0 {
		return nil, fmt.Errorf("%w: %s: negative offset %d", ErrInvalidRange, s.where(key), off)
	}
	if n == 0 {
		return s.emptyRange(ctx, key, off, n)
	}
	var opts minio.GetObjectOptions
	switch {
	case n > 0:
		opts.SetRange(off, off+n-1)
	case off > 0:
		opts.SetRange(off, 0)
	}
	body, info, hdr, err := s.core.GetObject(ctx, s.bucket, s.prefix+key, opts)
	if minio.ToErrorResponse(err).Code == minio.InvalidRange {
		return s.emptyRange(ctx, key, off, n) // off at or past the end
	}
	if err != nil {
		return nil, s.wrap("get", key, err)
	}
	if n > 0 && info.Size != n {
		body.Close()
		total := info.Size
		if cr := hdr.Get("Content-Range"); strings.Contains(cr, "/") {
			total, _ = strconv.ParseInt(cr[strings.LastIndexByte(cr, '/')+1:], 10, 64)
		}
		_, err := resolveRange(key, off, n, total)
		return nil, err
	}
	return body, nil
}

// emptyRange serves the ranges that hold no bytes, once the object's size says they are valid.
func (s *S3Store) emptyRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	info, err := s.core.StatObject(ctx, s.bucket, s.prefix+key, minio.StatObjectOptions{})
	if err != nil {
		return nil, s.wrap("get", key, err)
	}
	length, err := resolveRange(key, off, n, info.Size)
	if err != nil {
		return nil, err
	}
	if length != 0 {
		return nil, fmt.Errorf("checkpoint: get %s: server refused range %d+%d of %d bytes", s.where(key), off, n, info.Size)
	}
	return io.NopCloser(bytes.NewReader(nil)), nil
}

// List implements ObjectStore.
func (s *S3Store) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	var out []ObjectInfo
	opts := minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}
	for obj := range s.core.ListObjectsIter(ctx, s.bucket, opts) {
		if obj.Err != nil {
			return nil, s.wrap("list", prefix, obj.Err)
		}
		key := strings.TrimPrefix(obj.Key, s.prefix)
		if strings.HasSuffix(key, "/") {
			continue // a directory marker, not an object
		}
		out = append(out, ObjectInfo{Key: key, Size: obj.Size})
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("checkpoint: list %s: %w", s.where(prefix), err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete implements ObjectStore.
func (s *S3Store) Delete(ctx context.Context, key string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	err := s.core.RemoveObject(ctx, s.bucket, s.prefix+key, minio.RemoveObjectOptions{})
	if err != nil && minio.ToErrorResponse(err).Code != minio.NoSuchKey {
		return s.wrap("delete", key, err)
	}
	return nil
}
