import EdgeQLog

/// How much a log shows of the incumbent's *other* actions near each state it was in: the
/// evidence a learner has that another action could do better there.
///
/// An incumbent that is deterministic in the state (a fixed rule, a PI without dither) logs one
/// action per state region. There the log cannot tell what another action does: a candidate
/// without a conservative term picks from values nothing trained and fails
/// `unsupported_actions`; one with a conservative term copies the incumbent. `edgeq check
/// --log` prints this measure and warns when the single-action share exceeds the mapping's
/// `checks.max_unsupported` (docs/learning.md, "Action diversity").
///
/// The measure: states are standardised per column (mean and standard deviation of the
/// incumbent's rows, as the retraining's normalisation does); for up to `probes` incumbent
/// rows spread over the log, the `neighbours` nearest incumbent states among up to
/// `sampleSize` rows (the probe itself left out) are found, and the probe counts as
/// *single-action* when every one of them carries the probe's action — the neighbourhood the
/// `unsupported_actions` check looks at.
public struct ActionDiversity: Sendable, Equatable {
    /// Incumbent rows with a known action and a state of the expected width.
    public var incumbentRows: Int
    /// Incumbent states probed.
    public var probed: Int
    /// Share of probed states whose nearest incumbent states all show the same action as theirs.
    public var singleActionShare: Double
    /// Share of each action among the incumbent rows (index = action).
    public var actionShare: [Double]
    /// Neighbours looked at per probed state.
    public static let neighbours = 10

    /// Measures `rows` (all actors: only the incumbent's are used).
    ///
    /// - Parameters:
    ///   - width: the mapping's state width; rows of another width are left out.
    ///   - actionCount: the mapping's number of actions; rows with another action are left out.
    /// - Returns: nil when fewer than `neighbours + 1` incumbent rows are usable: nothing to
    ///   judge (not applicable, not "diverse").
    public static func measure(_ rows: [EdgeQLog.Transition], width: Int, actionCount: Int,
                               probes: Int = 500, sampleSize: Int = 3000) -> ActionDiversity? {
        let usable = rows.filter {
            $0.actor == .incumbent && !$0.flags.contains(.gap) && $0.state.count == width
                && ($0.action.map { $0 >= 0 && $0 < actionCount } ?? false)
        }
        guard usable.count > neighbours, width > 0 else { return nil }
        // Standardise per column (a constant column keeps a scale of 1).
        var mean = [Double](repeating: 0, count: width), sq = [Double](repeating: 0, count: width)
        for t in usable {
            for k in 0..<width {
                mean[k] += Double(t.state[k])
                sq[k] += Double(t.state[k]) * Double(t.state[k])
            }
        }
        let n = Double(usable.count)
        var scale = [Double](repeating: 1, count: width)
        for k in 0..<width {
            mean[k] /= n
            let variance = max(sq[k] / n - mean[k] * mean[k], 0)
            scale[k] = variance > 1e-12 ? 1 / variance.squareRoot() : 1
        }
        func standardised(_ s: [Float]) -> [Double] { (0..<width).map { (Double(s[$0]) - mean[$0]) * scale[$0] } }
        let sampleIndex = Array(stride(from: 0, to: usable.count, by: max(usable.count / max(sampleSize, 1), 1)))
        let sample = sampleIndex.map { standardised(usable[$0].state) }
        let probeIndex = Array(stride(from: 0, to: usable.count, by: max(usable.count / max(probes, 1), 1)))
        var single = 0, probed = 0
        for i in probeIndex {
            let s = standardised(usable[i].state)
            // The k nearest (squared distance, action), kept sorted; the probe itself is skipped.
            var nearest: [(Double, Int)] = []
            for (j, x) in sample.enumerated() where sampleIndex[j] != i {
                var d = 0.0
                for k in 0..<width { let e = s[k] - x[k]; d += e * e }
                if nearest.count < neighbours {
                    nearest.append((d, usable[sampleIndex[j]].action ?? -1))
                    nearest.sort { $0.0 < $1.0 }
                } else if let last = nearest.last, d < last.0 {
                    nearest[neighbours - 1] = (d, usable[sampleIndex[j]].action ?? -1)
                    nearest.sort { $0.0 < $1.0 }
                }
            }
            guard nearest.count == neighbours else { continue }
            probed += 1
            if nearest.allSatisfy({ $0.1 == usable[i].action }) { single += 1 }
        }
        guard probed > 0 else { return nil }
        var share = [Double](repeating: 0, count: actionCount)
        for t in usable { if let a = t.action { share[a] += 1 / n } }
        return ActionDiversity(incumbentRows: usable.count, probed: probed,
                               singleActionShare: Double(single) / Double(probed), actionShare: share)
    }
}
