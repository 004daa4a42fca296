"""Writes merkle_rfc9162.json: known answers for rt_client.merkle, independently computed.

Run once (``python tests/vectors/gen_merkle_vectors.py``); the output is committed
and the tests read it. Deliberately shares no code and no algorithm with
rt_client/merkle.py: this builds the whole tree level by level (pairing nodes
left to right, an unpaired last node carried up unchanged, which yields the
RFC 9162 tree), reads inclusion paths off the levels by sibling index, and
consistency proofs as the inclusion path of the old tree's last complete
subtree (RFC 9162 2.1.4.1's result, built bottom-up). It checks itself
against the RFC 6962 reference roots (published by Certificate Transparency:
leaves "", 00, 10, 2021, ... and the tree head of each size 1..8) before
writing anything.
"""

import hashlib
import json
import pathlib

CT_LEAVES = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def h(b):
    return hashlib.sha256(b).digest()


def levels(leaf_hashes):
    out = [list(leaf_hashes)]
    while len(out[-1]) > 1:
        cur, nxt = out[-1], []
        for i in range(0, len(cur), 2):
            nxt.append(h(b"\x01" + cur[i] + cur[i + 1]) if i + 1 < len(cur) else cur[i])
        out.append(nxt)
    return out


def path_from(lv, level, index):
    proof = []
    for row in lv[level:-1]:
        sib = index ^ 1
        if sib < len(row):
            proof.append(row[sib])
        index //= 2
    return proof


def main():
    data = [bytes.fromhex(x) for x in CT_LEAVES] + [
        bytes([i, 0xAA, i * 3 % 256]) for i in range(8, 21)
    ]
    lh = [h(b"\x00" + d) for d in data]
    for n in range(1, 9):
        assert levels(lh[:n])[-1][0].hex() == CT_ROOTS[n - 1], n
    sizes = range(1, len(lh) + 1)
    roots = {n: levels(lh[:n])[-1][0] for n in sizes}
    inclusion, consistency = [], []
    for n in sizes:
        lv = levels(lh[:n])
        for i in range(n):
            inclusion.append(
                {"index": i, "size": n, "proof": [x.hex() for x in path_from(lv, 0, i)]}
            )
        for m in range(1, n + 1):
            if m == n:
                proof = []
            else:
                level = (m & -m).bit_length() - 1  # the old tree's last complete subtree
                idx = (m - 1) >> level
                proof = path_from(lv, level, idx)
                if idx != 0:  # the old tree is not one complete subtree: name that node
                    proof.insert(0, levels(lh[:m])[level][idx])
            consistency.append({"old_size": m, "new_size": n, "proof": [x.hex() for x in proof]})
    out = {
        "about": "RFC 9162 2.1 known answers; written by gen_merkle_vectors.py",
        "leaves": [d.hex() for d in data],
        "leaf_hashes": [x.hex() for x in lh],
        "roots": {str(n): r.hex() for n, r in roots.items()},
        "inclusion": inclusion,
        "consistency": consistency,
    }
    path = pathlib.Path(__file__).with_name("merkle_rfc9162.json")
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
