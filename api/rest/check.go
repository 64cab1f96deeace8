package rest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode"

	"mplane/errcode"
	"mplane/uid"
)

// What the decoder checks of every body, whatever its params, before
// their own Validate:
//
//   - the body is valid UTF-8 (encoding/json would turn invalid bytes into
//     U+FFFD silently), and no object has a member twice (encoding/json
//     would keep the last one silently);
//   - no string holds a NUL;
//   - a member named "name" holds no control or format character (bidi
//     overrides, zero-width joiners: what makes a name look like another);
//   - a member whose name ends in "Uuid" is empty or a UUID (32 hexadecimal
//     digits), and so is each string of one ending in "Uuids": a malformed
//     reference is the caller's mistake (400), not a lookup.

// noDuplicateKeys refuses a JSON document with an object that has a member
// twice, naming its path.
func noDuplicateKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	_, err := scanValue(dec, "body")
	return err
}

// scanValue reads one value from dec; a syntax error is left to the
// decoder that follows, which reports it with its position.
func scanValue(dec *json.Decoder, path string) (json.Token, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, nil
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, nil
			}
			key, _ := k.(string)
			if seen[key] {
				return nil, invalid("%s: field %q is given twice; give each field once", path, key)
			}
			seen[key] = true
			if _, err := scanValue(dec, path+"."+key); err != nil {
				return nil, err
			}
		}
		_, _ = dec.Token() // '}'
	case json.Delim('['):
		for i := 0; dec.More(); i++ {
			if _, err := scanValue(dec, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return nil, err
			}
		}
		_, _ = dec.Token() // ']'
	}
	return tok, nil
}

// checkMember applies the checks by name to the member name of an object,
// whose raw value is raw, at path.
func checkMember(name string, raw json.RawMessage, path string) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil // the decoder reports it
		}
		return checkString(name, s, path)
	case '[':
		if !strings.HasSuffix(name, "Uuids") {
			return nil
		}
		var list []json.RawMessage
		if json.Unmarshal(raw, &list) != nil {
			return nil
		}
		for i, e := range list {
			var s string
			if json.Unmarshal(e, &s) != nil {
				continue
			}
			if err := checkString(strings.TrimSuffix(name, "s"), s, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkString(name, s, path string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return invalid("%s must not hold a NUL character", path)
	}
	switch {
	case name == "name":
		for _, r := range s {
			if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
				return invalid("%s must not hold control or format characters (found %U)", path, r)
			}
		}
	case strings.HasSuffix(name, "Uuid") && s != "":
		if err := CheckUUID(path, s); err != nil {
			return err
		}
	}
	return nil
}

// CheckUUID refuses a value that is not a UUID (32 hexadecimal digits),
// naming what it is.
func CheckUUID(what, s string) error {
	if uid.Valid(s) {
		return nil
	}
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return errcode.New(errcode.InvalidArgument, "%s must be a UUID (32 lowercase hexadecimal digits), got %q", what, s)
}
