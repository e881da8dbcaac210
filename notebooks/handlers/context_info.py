"""Context handler: answers with what the host sent besides the data (JSON)."""

import json

from fnrun_nb.handler import Context, serve


def handle(data: bytes, ctx: Context) -> str:
    return json.dumps(
        {
            "env": ctx.env,
            "has_deadline": ctx.deadline is not None,
            "deadline": ctx.deadline.isoformat() if ctx.deadline else None,
            "remaining": ctx.remaining(),
            "bytes": len(data),
        }
    )


if __name__ == "__main__":
    serve(handle)
