/// The region of raw states a model was trained on: per state input, the smallest and the
/// largest value in the training rows (states and next states). Stored in the model file
/// (`support.min`, `support.max`; docs/model-format.md) and used by the decision path to see a
/// state the model never saw (docs/mapping.md, `safety.support_margin`).
public struct StateSupport: Sendable, Equatable {
    /// Per input, the smallest raw value seen in training.
    public var min: [Float]
    /// Per input, the largest raw value seen in training.
    public var max: [Float]

    /// A support box; `min` and `max` must have one finite entry per input with min ≤ max
    /// (`QModel` checks when it loads a file).
    public init(min: [Float], max: [Float]) {
        self.min = min
        self.max = max
    }

    /// The box around `states` ((N, inputCount) row-major, raw); nil when there is no row or
    /// a value is not finite in every row of an input (no box can be drawn then).
    public static func fit(_ states: [Float], inputCount n: Int) -> StateSupport? {
        guard n > 0 else { return nil }
        return fit(rows: stride(from: 0, to: states.count - n + 1, by: n).lazy.map { states[$0..<($0 + n)] }, inputCount: n)
    }

    /// The box around state vectors of `inputCount` raw values each (a vector of another
    /// length is skipped; a value that is not finite is left out); nil when an input has no
    /// finite value at all.
    public static func fit<S: Sequence, V: Collection>(rows: S, inputCount n: Int) -> StateSupport?
        where S.Element == V, V.Element == Float, V.Index == Int {
        guard n > 0 else { return nil }
        var lo = [Float](repeating: .infinity, count: n), hi = [Float](repeating: -.infinity, count: n)
        for v in rows where v.count == n {
            for (i, x) in zip(0..<n, v) where x.isFinite {
                if x < lo[i] { lo[i] = x }
                if x > hi[i] { hi[i] = x }
            }
        }
        guard lo.allSatisfy(\.isFinite), hi.allSatisfy(\.isFinite) else { return nil }
        return StateSupport(min: lo, max: hi)
    }

    /// The smallest box holding this one and `other` (inputs of both; nil `other`: this box).
    /// Boxes of different widths do not combine: this box is returned.
    public func merged(with other: StateSupport?) -> StateSupport {
        guard let other, other.min.count == min.count, other.max.count == max.count else { return self }
        return StateSupport(min: zip(min, other.min).map { Swift.min($0, $1) }, max: zip(max, other.max).map { Swift.max($0, $1) })
    }

    /// Whether the box is well formed for `inputCount` inputs (finite, min ≤ max).
    public func isValid(inputCount n: Int) -> Bool {
        min.count == n && max.count == n && zip(min, max).allSatisfy { $0.isFinite && $1.isFinite && $0 <= $1 }
    }

    /// The first input of `state` outside the box widened on each side by its own margin ×
    /// its width (`margins`, one per input; an infinite margin: the input is not checked), or
    /// nil when the state is inside. An input that never varied in training has width 0: any
    /// other value is outside. Allocates nothing.
    public func firstOutside(_ state: UnsafeBufferPointer<Float>, margins: UnsafeBufferPointer<Float>) -> Int? {
        firstOutside(state, inputs: Swift.min(state.count, margins.count)) { margins[$0] }
    }

    /// The first input of `state` outside the box widened by `margin` × its width on each side
    /// (an input that never varied in training has width 0: any other value is outside), or
    /// nil when the state is inside. Allocates nothing.
    public func firstOutside(_ state: UnsafeBufferPointer<Float>, margin: Float) -> Int? {
        firstOutside(state, inputs: state.count) { _ in margin }
    }

    /// The scan both share: the first of the first `inputs` inputs outside the box widened by
    /// `margin(i)` × its width (an infinite margin skips the input).
    @inline(__always)
    private func firstOutside(_ state: UnsafeBufferPointer<Float>, inputs: Int, margin: (Int) -> Float) -> Int? {
        let n = Swift.min(inputs, min.count)
        return min.withUnsafeBufferPointer { lo in
            max.withUnsafeBufferPointer { hi in
                for i in 0..<n {
                    let m = margin(i)
                    guard m.isFinite else { continue }
                    let pad = m * (hi[i] - lo[i])
                    let x = state[i]
                    if !(x >= lo[i] - pad && x <= hi[i] + pad) { return i }
                }
                return nil
            }
        }
    }
}
