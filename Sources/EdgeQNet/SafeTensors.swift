import Foundation

/// A tensor as stored in a safetensors file: dtype, shape and little-endian bytes.
struct StoredTensor {
    enum DType: String { case F32, I8, I16, I32, I64 }
    var dtype: DType
    var shape: [Int]
    var bytes: [UInt8]

    var elementCount: Int { shape.reduce(1, *) }

    static func f32(_ values: [Float], _ shape: [Int]) -> StoredTensor {
        var b = [UInt8](); b.reserveCapacity(values.count * 4)
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { b.append(contentsOf: $0) } }
        return StoredTensor(dtype: .F32, shape: shape, bytes: b)
    }
    static func i8(_ values: [Int8], _ shape: [Int]) -> StoredTensor {
        StoredTensor(dtype: .I8, shape: shape, bytes: values.map { UInt8(bitPattern: $0) })
    }
    static func i16(_ values: [Int16], _ shape: [Int]) -> StoredTensor {
        var b = [UInt8](); b.reserveCapacity(values.count * 2)
        for v in values { withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) } }
        return StoredTensor(dtype: .I16, shape: shape, bytes: b)
    }
    static func i64(_ values: [Int], _ shape: [Int]) -> StoredTensor {
        var b = [UInt8]()
        for v in values { withUnsafeBytes(of: Int64(v).littleEndian) { b.append(contentsOf: $0) } }
        return StoredTensor(dtype: .I64, shape: shape, bytes: b)
    }

    var floats: [Float] {
        (0..<elementCount).map { k in
            var u: UInt32 = 0
            for j in 0..<4 { u |= UInt32(bytes[4 * k + j]) << (8 * UInt32(j)) }
            return Float(bitPattern: u)
        }
    }
    var int8s: [Int8] { bytes.map { Int8(bitPattern: $0) } }
    var int16s: [Int16] {
        (0..<elementCount).map { k in Int16(bitPattern: UInt16(bytes[2 * k]) | UInt16(bytes[2 * k + 1]) << 8) }
    }
    var ints: [Int] {
        switch dtype {
        case .I64:
            return (0..<elementCount).map { k in
                var u: UInt64 = 0
                for j in 0..<8 { u |= UInt64(bytes[8 * k + j]) << (8 * UInt64(j)) }
                return Int(Int64(bitPattern: u))
            }
        case .I32:
            return (0..<elementCount).map { k in
                var u: UInt32 = 0
                for j in 0..<4 { u |= UInt32(bytes[4 * k + j]) << (8 * UInt32(j)) }
                return Int(Int32(bitPattern: u))
            }
        default: return []
        }
    }
}

extension StoredTensor.DType {
    var size: Int {
        switch self { case .F32, .I32: return 4; case .I8: return 1; case .I16: return 2; case .I64: return 8 }
    }
}

/// The safetensors container: 8-byte little-endian header length, a JSON header
/// {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the data.
enum SafeTensors {
    /// Serialises tensors (sorted by name, like the Python package) and string metadata.
    static func encode(_ tensors: [String: StoredTensor], metadata: [String: String]) -> [UInt8] {
        var header: [String: Any] = ["__metadata__": metadata]
        var data = [UInt8]()
        for name in tensors.keys.sorted() {
            let t = tensors[name]!
            header[name] = ["dtype": t.dtype.rawValue, "shape": t.shape, "data_offsets": [data.count, data.count + t.bytes.count]]
            data.append(contentsOf: t.bytes)
        }
        var json = Array((try? JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])) ?? Data("{}".utf8))
        while json.count % 8 != 0 { json.append(0x20) }  // pad with spaces, as the Python package does
        var out = [UInt8]()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: json)
        out.append(contentsOf: data)
        return out
    }

    /// Parses and checks the container: header length, JSON, dtypes, shapes against byte
    /// ranges, ranges inside the data and covering it without gaps or overlaps.
    static func decode(_ file: [UInt8]) throws(QNetError) -> (tensors: [String: StoredTensor], metadata: [String: String]) {
        guard file.count >= 8 else {
            throw QNetError(.truncated, "file is \(file.count) bytes, shorter than the 8-byte header length; the copy was cut short")
        }
        var n: UInt64 = 0
        for j in 0..<8 { n |= UInt64(file[j]) << (8 * UInt64(j)) }
        guard n >= 2, n <= 100_000_000 else {
            throw QNetError(.badHeader, "header length \(n) is not plausible; this is not a safetensors model file")
        }
        guard 8 + Int(n) <= file.count else {
            throw QNetError(.truncated, "header length says \(n) bytes but the file has only \(file.count - 8) after it; the copy was cut short")
        }
        let headerBytes = Data(file[8..<(8 + Int(n))])
        guard let object = try? JSONSerialization.jsonObject(with: headerBytes), let header = object as? [String: Any] else {
            throw QNetError(.badHeader, "the \(n)-byte header is not a JSON object (wrong header length, or not a model file)")
        }
        let dataStart = 8 + Int(n)
        let dataCount = file.count - dataStart
        var metadata: [String: String] = [:]
        if let m = header["__metadata__"] {
            guard let m = m as? [String: String] else { throw QNetError(.badHeader, "__metadata__ must map strings to strings") }
            metadata = m
        }
        var tensors: [String: StoredTensor] = [:]
        var ranges: [(Int, Int, String)] = []
        for (name, value) in header where name != "__metadata__" {
            guard let entry = value as? [String: Any], let dtypeName = entry["dtype"] as? String,
                  let shapeAny = entry["shape"] as? [Any], let offsAny = entry["data_offsets"] as? [Any], offsAny.count == 2 else {
                throw QNetError(.badHeader, "tensor \(name): entry needs dtype, shape and data_offsets")
            }
            let shape = shapeAny.compactMap { ($0 as? NSNumber)?.intValue }
            let offs = offsAny.compactMap { ($0 as? NSNumber)?.intValue }
            guard shape.count == shapeAny.count, offs.count == 2, shape.allSatisfy({ $0 >= 0 }), offs[0] >= 0, offs[1] >= offs[0] else {
                throw QNetError(.badHeader, "tensor \(name): shape and data_offsets must be non-negative integers")
            }
            guard let dtype = StoredTensor.DType(rawValue: dtypeName) else {
                throw QNetError(.wrongDType, "tensor \(name): dtype \(dtypeName) is not one EdgeQ reads (F32, I8, I16, I32, I64)")
            }
            // Checked: a shape whose byte count overflows is as wrong as one that does not match.
            var expected = dtype.size
            for d in shape {
                let (m, overflow) = expected.multipliedReportingOverflow(by: d)
                guard !overflow, m <= file.count else {
                    throw QNetError(.shapeMismatch, "tensor \(name): shape \(shape) of \(dtypeName) is larger than the whole file (\(file.count) bytes)")
                }
                expected = m
            }
            guard offs[1] - offs[0] == expected else {
                throw QNetError(.shapeMismatch, "tensor \(name): shape \(shape) of \(dtypeName) needs \(expected) bytes, data_offsets span \(offs[1] - offs[0])")
            }
            guard offs[1] <= dataCount else {
                throw QNetError(.truncated, "tensor \(name) ends at byte \(offs[1]) of the data, which has only \(dataCount); the copy was cut short")
            }
            ranges.append((offs[0], offs[1], name))
            tensors[name] = StoredTensor(dtype: dtype, shape: shape, bytes: Array(file[(dataStart + offs[0])..<(dataStart + offs[1])]))
        }
        ranges.sort { $0.0 < $1.0 }
        var cursor = 0
        for r in ranges {
            guard r.0 == cursor else {
                throw QNetError(.badHeader, "tensor \(r.2) starts at \(r.0), expected \(cursor): data ranges overlap or leave gaps")
            }
            cursor = r.1
        }
        guard cursor == dataCount else {
            throw QNetError(.badHeader, "tensors cover \(cursor) bytes but the data holds \(dataCount): trailing bytes")
        }
        return (tensors, metadata)
    }
}
