package kvm

import "errors"

var (
	errInjected      = errors.New("injected failure (--fail-rate)")
	errSecretChanged = errors.New("host secret changed during connect; retry with the current secret")
)
