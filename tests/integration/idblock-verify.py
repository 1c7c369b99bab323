#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""An independent check of an SEV-SNP ID block and ID_AUTH_INFO (python3-cryptography), written
from the SNP firmware ABI's byte layout (docs/measure.md), sharing no code with Nitride.

  idblock-verify.py ID_BLOCK_B64 ID_AUTH_B64 ID_KEY_PUB.pem [AUTHOR_KEY_PUB.pem]

Checks sizes, VERSION 1, the algorithm and curve fields, that ID_KEY (and AUTHOR_KEY) hold the
given public keys in AMD's format, that reserved bytes are zero, and both signatures. Prints JSON:
the ID block's fields and the SHA-384 digests of the public key structures."""
import base64
import hashlib
import json
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def die(msg):
    print("idblock-verify: " + msg, file=sys.stderr)
    sys.exit(1)


def le(b):
    return int.from_bytes(b, "little")


def amd_pubkey(pub):
    """AMD's 0x404-byte public key structure of an EC P-384 key."""
    n = pub.public_numbers()
    return (struct.pack("<I", 2) + n.x.to_bytes(72, "little") + n.y.to_bytes(72, "little")
            + bytes(0x404 - 4 - 144))


def check_sig(pub, sig, msg, what):
    if len(sig) != 0x200:
        die(what + ": signature field size")
    if any(sig[144:]):
        die(what + ": reserved bytes of the signature are not zero")
    r, s = le(sig[0:72]), le(sig[72:144])
    try:
        pub.verify(encode_dss_signature(r, s), msg, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        die(what + ": signature does not verify")


def load_pub(path):
    with open(path, "rb") as f:
        pub = serialization.load_pem_public_key(f.read())
    if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp384r1":
        die(path + ": not an EC P-384 public key")
    return pub


def main():
    if len(sys.argv) not in (4, 5):
        die("usage: idblock-verify.py ID_BLOCK_B64 ID_AUTH_B64 ID_KEY.pem [AUTHOR_KEY.pem]")
    blk = base64.b64decode(sys.argv[1], validate=True)
    auth = base64.b64decode(sys.argv[2], validate=True)
    if len(blk) != 0x60:
        die("ID block is %d bytes, not 0x60" % len(blk))
    if len(auth) != 0x1000:
        die("ID_AUTH_INFO is %d bytes, not 0x1000" % len(auth))
    ld, fam, img = blk[0:0x30], blk[0x30:0x40], blk[0x40:0x50]
    version, svn, policy = struct.unpack_from("<IIQ", blk, 0x50)
    if version != 1:
        die("ID block VERSION %d" % version)

    id_pub = load_pub(sys.argv[3])
    id_algo, author_algo = struct.unpack_from("<II", auth, 0)
    if id_algo != 1:
        die("ID_KEY_ALGO %d" % id_algo)
    if any(auth[0x008:0x040]) or any(auth[0x644:0x680]) or any(auth[0xC84:0x1000]):
        die("reserved bytes of ID_AUTH_INFO are not zero")
    id_key = auth[0x240:0x644]
    if id_key != amd_pubkey(id_pub):
        die("ID_KEY is not the given ID public key in AMD's format")
    check_sig(id_pub, auth[0x040:0x240], blk, "ID_BLOCK_SIG")
    out = {
        "measurement": ld.hex(),
        "family_id": fam.hex(),
        "image_id": img.hex(),
        "guest_svn": svn,
        "policy": "0x%x" % policy,
        "id_key_digest": hashlib.sha384(id_key).hexdigest(),
        "author_key_digest": None,
    }
    author_key = auth[0x880:0xC84]
    if len(sys.argv) == 5:
        author_pub = load_pub(sys.argv[4])
        if author_algo != 1:
            die("AUTH_KEY_ALGO %d" % author_algo)
        if author_key != amd_pubkey(author_pub):
            die("AUTHOR_KEY is not the given author public key in AMD's format")
        check_sig(author_pub, auth[0x680:0x880], id_key, "ID_KEY_SIG")
        out["author_key_digest"] = hashlib.sha384(author_key).hexdigest()
    elif author_algo != 0 or any(author_key) or any(auth[0x680:0x880]):
        die("author key fields are set but no author key was given")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
