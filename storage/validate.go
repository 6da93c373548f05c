package storage

import (
	"strconv"
	"unicode"
	"unicode/utf8"
)

// Limits on stored fields. The gateway enforces them before proposing and the
// state machine enforces them again, so a command that slips past the edge
// (an older node, a hand-made command) is refused rather than stored.
const (
	MaxIDLen        = 64     // channel ids, client_msg_ids, user ids, reaction names
	MaxTextRunes    = 40_000 // message text, in characters (Unicode code points)
	MaxNameRunes    = 80     // channel display name
	MaxTopicRunes   = 250    // channel topic
	MaxReactions    = 50     // distinct reaction names on one message
	MaxPageSize     = 1000   // history, thread and list pages
	DefaultPageSize = 100
)

// ValidateChannelID checks a channel id: 1-64 characters of [a-z0-9._-].
func ValidateChannelID(id string) error {
	if !validID(id, isChannelIDByte) {
		return domainErr(ErrInvalidArgument,
			"channel_id %s: must be 1-64 characters of a-z, 0-9, '.', '_' or '-'", quote(id))
	}
	return nil
}

// ValidateClientMsgID checks a client_msg_id: empty (no dedup) or 1-64
// characters of [A-Za-z0-9._:-].
func ValidateClientMsgID(id string) error {
	if id != "" && !validID(id, isClientIDByte) {
		return domainErr(ErrInvalidArgument,
			"client_msg_id %s: must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'", quote(id))
	}
	return nil
}

// ValidateUserID checks a user id: 1-64 characters of [A-Za-z0-9._:@-].
func ValidateUserID(id string) error {
	if !validID(id, func(c byte) bool { return isClientIDByte(c) || c == '@' }) {
		return domainErr(ErrInvalidArgument,
			"user %s: must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', ':', '@' or '-'", quote(id))
	}
	return nil
}

// ValidateReactionName checks an emoji name: 1-64 characters of [a-z0-9_+-].
func ValidateReactionName(name string) error {
	if !validID(name, func(c byte) bool {
		return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '+' || c == '-'
	}) {
		return domainErr(ErrInvalidArgument,
			"name %s: must be 1-64 characters of a-z, 0-9, '_', '+' or '-'", quote(name))
	}
	return nil
}

// ValidateText checks message text: valid UTF-8, 1 to 40,000 characters.
func ValidateText(text string) error {
	switch {
	case text == "":
		return domainErr(ErrInvalidArgument, "text: must not be empty")
	case !utf8.ValidString(text):
		return domainErr(ErrInvalidArgument, "text: must be valid UTF-8")
	case utf8.RuneCountInString(text) > MaxTextRunes:
		return domainErr(ErrInvalidArgument, "text: %d characters is over the limit of %d",
			utf8.RuneCountInString(text), MaxTextRunes)
	}
	return nil
}

// ValidateLabel checks a channel name or topic: valid UTF-8 without control
// characters, at most max characters.
func ValidateLabel(field, s string, max int) error {
	switch {
	case !utf8.ValidString(s):
		return domainErr(ErrInvalidArgument, "%s: must be valid UTF-8", field)
	case utf8.RuneCountInString(s) > max:
		return domainErr(ErrInvalidArgument, "%s: over the limit of %d characters", field, max)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return domainErr(ErrInvalidArgument, "%s: must not contain control characters", field)
		}
	}
	return nil
}

// ValidateLimit checks a page size and returns it with 0 replaced by the
// default of 100.
func ValidateLimit(limit uint32) (int, error) {
	switch {
	case limit == 0:
		return DefaultPageSize, nil
	case limit > MaxPageSize:
		return 0, domainErr(ErrInvalidArgument, "limit %d: must be at most %d", limit, MaxPageSize)
	}
	return int(limit), nil
}

func validID(s string, ok func(byte) bool) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

func isChannelIDByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

func isClientIDByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == ':' || c == '-'
}

// quote renders a client-supplied value for an error message: quoted, and
// cut to 80 bytes so that a huge value does not make a huge error.
func quote(s string) string {
	const max = 80
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}
