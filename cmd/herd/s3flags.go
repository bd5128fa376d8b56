package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/herd-llm/herd/checkpoint"
)

// s3Options are the S3 flags shared by the commands that read or write checkpoints.
// Credentials come from the usual AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
// AWS_SESSION_TOKEN environment variables, never from flags.
type s3Options struct {
	endpoint *string
	region   *string
	insecure *bool
}

func s3Flags(fs *flag.FlagSet) *s3Options {
	return &s3Options{
		endpoint: fs.String("s3-endpoint", os.Getenv("AWS_ENDPOINT_URL"), "S3 endpoint host:port for s3:// URIs (default: $AWS_ENDPOINT_URL); credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
		region:   fs.String("s3-region", os.Getenv("AWS_REGION"), "S3 region (default: $AWS_REGION)"),
		insecure: fs.Bool("s3-insecure", false, "talk plain HTTP to the S3 endpoint (test servers on 127.0.0.1)"),
	}
}

func (o *s3Options) config() checkpoint.S3Config {
	ep := *o.endpoint
	secure := !*o.insecure
	if rest, ok := strings.CutPrefix(ep, "http://"); ok {
		ep, secure = rest, false
	} else if rest, ok := strings.CutPrefix(ep, "https://"); ok {
		ep = rest
	}
	// A few quick retries inside the S3 client ride out a dropped connection; longer outages
	// are the retry policy's (--store-retry-for), which logs them.
	return checkpoint.S3Config{Endpoint: ep, Region: *o.region, Secure: secure, MaxRetries: 3,
		AccessKey: os.Getenv("AWS_ACCESS_KEY_ID"), SecretKey: os.Getenv("AWS_SECRET_ACCESS_KEY"), SessionToken: os.Getenv("AWS_SESSION_TOKEN")}
}

// failpointFromEnv returns the checkpoint failure point named by HERD_FAILPOINT, as
// NAME@STEP (for example before-manifest@20): when the save of STEP reaches NAME, the process
// kills itself with SIGKILL, as a crash would. Fault tests use it; unset means none.
func failpointFromEnv() func(string, int) {
	spec := os.Getenv("HERD_FAILPOINT")
	if spec == "" {
		return nil
	}
	name, stepStr, _ := strings.Cut(spec, "@")
	step, err := strconv.Atoi(stepStr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "herd: HERD_FAILPOINT=%q is not NAME@STEP; ignored\n", spec)
		return nil
	}
	return func(at string, s int) {
		if at == name && s == step {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
}
