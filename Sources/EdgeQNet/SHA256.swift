// SHA-256 for the checksum stored beside each model file, from swift-crypto (BoringSSL):
// no hand-written cryptography in EdgeQ.
import Crypto

/// The SHA-256 digest of `data`, as 64 lowercase hex digits.
public func sha256Hex(_ data: [UInt8]) -> String {
    let digits: [Character] = Array("0123456789abcdef")
    var out = ""
    out.reserveCapacity(64)
    for byte in SHA256.hash(data: data) {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 0xf)])
    }
    return out
}
