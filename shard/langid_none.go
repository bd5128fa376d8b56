//go:build nolangid

package shard

// This build leaves language identification out (-tags nolangid): the GPU machine's binary
// has no use for lingua-go's language models, which add about 120 MB.

// langIDBuilt says whether this build identifies languages.
const langIDBuilt = false

// KnownLangs returns nothing: this build identifies no language.
func KnownLangs() []string { return nil }

// DetectLanguage finds no language in this build.
func DetectLanguage(doc []byte) (string, float64) { return "", 0 }

// warmLangID has no models to load in this build.
func warmLangID() {}
