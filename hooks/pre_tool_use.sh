#!/bin/sh
# PreToolUse(Bash), first step. Every Bash call of every session comes here,
# so a command that is not ours is passed over without starting Python: only
# a payload of sane size whose command starts with `brain ` or with an
# absolute path ending in `/bin/brain ` goes on to hooks/pre_tool_use.py,
# which alone can approve. Passing over means no answer (the host's normal
# permission flow), never approval. In JSON, `"command":"` with bare quotes
# can only be the key itself: quotes inside strings are escaped.
payload=$(cat) || exit 0
[ ${#payload} -le 65536 ] || exit 0
case $payload in
    *'"command":"brain '* | *'"command": "brain '* | \
    *'"command":"/'*'/bin/brain '* | *'"command": "/'*'/bin/brain '*)
        printf '%s' "$payload" | "${0%/*}/run" pre_tool_use ;;
esac
exit 0
