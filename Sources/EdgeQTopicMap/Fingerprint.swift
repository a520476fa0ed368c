// The part of a mapping a model depends on, as one canonical text: the trust module hashes it
// into the mapping fingerprint that a model's signature covers (docs/security.md). Kept here,
// free of cryptography, because only the topic map knows what its definitions mean.

import EdgeQCore

extension TopicMap {
    /// A canonical description of what a Q-network trained for this mapping depends on: the
    /// state (each feature in order with its source and normalisation, the history length, and
    /// the decoding of every signal a feature reads: kind, enum table, scale, offset) and the
    /// actions (names, in the network's output order).
    ///
    /// Left out on purpose, because a model stays valid when they change: topics and JSON paths
    /// (a broker or topic rename), valid ranges and maximum ages (safety, not meaning), action
    /// writes and masks, reward and episode expressions, `learning`, `safety`, `gateway`, `fleet`
    /// (operational settings: topic, batching, the shipper's priority and compression), and
    /// signal roles (`role: controlled | exogenous`): a role says which signals a *plant model*
    /// predicts or is given, and which the log records raw. It changes what is learned next, not
    /// what the served Q-network's inputs and outputs mean, so marking a role never invalidates
    /// a signed model.
    ///
    /// Format (version 1), one item per line, every text quoted as a JSON string with
    /// `\"`, `\\` and control characters escaped, numbers in Swift's shortest round-trip form:
    /// ```
    /// edgeq-mapping-v1
    /// history 3
    /// feature "temp" signal "temp" norm range 15.0 30.0
    /// feature "err" expression "setpoint - temp" norm none
    /// feature "hour" cyclic "hour" 24.0 norm none
    /// feature "tod" time_of_day norm none
    /// signal "temp" number scale 1.0 offset 0.0
    /// signal "state" enum "off"=0.0,"on"=1.0 scale 1.0 offset 0.0
    /// action 0 "off"
    /// ```
    /// Signals are listed in file order, only those a feature reads (directly or through an
    /// expression feature); enum tables are sorted by their strings.
    public var canonicalDefinition: String {
        var lines = ["edgeq-mapping-v1", "history \(history)"]
        for f in features {
            var line = "feature \(jsonString(f.name)) "
            switch f.source {
            case .signal(let s): line += "signal \(jsonString(s))"
            case .expression(let e): line += "expression \(jsonString(e))"
            case .cyclic(let e, let period): line += "cyclic \(jsonString(e)) \(period.description)"
            case .timeOfDay: line += "time_of_day"
            case .dayOfWeek: line += "day_of_week"
            }
            switch f.normalization {
            case .none: line += " norm none"
            case .range(let lo, let hi): line += " norm range \(lo.description) \(hi.description)"
            case .learned: line += " norm learned"
            }
            lines.append(line)
        }
        let read = Set(featureSignals.flatMap { $0 }.filter { $0 < signals.count })
        for (i, s) in signals.enumerated() where read.contains(i) {
            var line = "signal \(jsonString(s.name)) "
            switch s.kind {
            case .number: line += "number"
            case .bool: line += "bool"
            case .enumeration(let table):
                let entries = table.sorted { Array($0.key.unicodeScalars.map(\.value)).lexicographicallyPrecedes($1.key.unicodeScalars.map(\.value)) }
                line += "enum " + entries.map { "\(jsonString($0.key))=\($0.value.description)" }.joined(separator: ",")
            }
            line += " scale \(s.scale.description) offset \(s.offset.description)"
            lines.append(line)
        }
        for (i, a) in actions.enumerated() { lines.append("action \(i) \(jsonString(a.name))") }
        return lines.joined(separator: "\n") + "\n"
    }
}

