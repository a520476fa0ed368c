#!/usr/bin/env python3
"""Signs and verifies EdgeQ commands with Python's `cryptography` (docs/security.md).

  sign_command.py sign KEYFILE GATEWAY_ID PREFIX VERB COMMAND_JSON [TS_MS]
      prints the topic, then the payload to publish
  sign_command.py verify PUBFILE GATEWAY_ID TOPIC PAYLOAD
      prints the command and exits 0 when the signature verifies, else exits 1

The `sign_command` function is the one shown in docs/security.md.
"""
import base64, json, os, sys, time
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def sign_command(key_file, gateway_id, prefix, verb, command, ts_ms=None):
    """Returns (topic, payload) for `command` (a dict: "id" and the verb's fields)."""
    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(open(key_file).read().strip()))
    name = os.path.basename(key_file).removesuffix(".key")
    topic = f"{prefix}/cmd/{verb}"
    cmd = json.dumps(command, separators=(",", ":"), ensure_ascii=False)  # any JSON text: its bytes are signed
    ts_ms = int(time.time() * 1000) if ts_ms is None else ts_ms
    nonce = base64.b64encode(os.urandom(16)).decode()
    signed = "\n".join(["edgeq-cmd-v1", gateway_id, topic, str(ts_ms), nonce, name, cmd]).encode("utf-8")
    sig = base64.b64encode(key.sign(signed)).decode()
    auth = {"key": name, "ts_ms": ts_ms, "nonce": nonce, "sig": sig}
    return topic, json.dumps({"cmd": cmd, "auth": auth})


def verify_command(pub_file, gateway_id, topic, payload):
    """Returns the command dict when the payload's signature verifies, else raises."""
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(open(pub_file).read().strip()))
    envelope = json.loads(payload)
    cmd, auth = envelope["cmd"], envelope["auth"]
    signed = "\n".join(["edgeq-cmd-v1", gateway_id, topic, str(auth["ts_ms"]), auth["nonce"], auth["key"], cmd])
    key.verify(base64.b64decode(auth["sig"]), signed.encode("utf-8"))  # raises InvalidSignature
    return json.loads(cmd)


if __name__ == "__main__":
    if sys.argv[1] == "sign":
        ts = int(sys.argv[7]) if len(sys.argv) > 7 else None
        topic, payload = sign_command(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], json.loads(sys.argv[6]), ts)
        print(topic)
        print(payload)
    elif sys.argv[1] == "verify":
        try:
            print(json.dumps(verify_command(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]), ensure_ascii=False))
        except Exception as e:  # InvalidSignature, KeyError, ValueError
            print(f"refused: {type(e).__name__}: {e}", file=sys.stderr)
            sys.exit(1)
    else:
        sys.exit(f"unknown action {sys.argv[1]}: sign or verify")
