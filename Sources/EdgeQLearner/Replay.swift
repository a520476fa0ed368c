import EdgeQCore

// Replay: n-step aggregation at insertion, a ring buffer, uniform or prioritized sampling
// (sum-tree, importance weights, priorities updated from TD errors).

/// Turns consecutive 1-step transitions into n-step ones (CleanRL / SB3 style).
///
/// The window is flushed at a terminal or truncated step and whenever a transition does
/// not continue the previous one (its state differs from the previous next state), so no
/// n-step transition spans two episodes.
struct NStepBuilder {
    let n: Int
    let gamma: Float
    private var window: [Transition] = []

    init(n: Int, gamma: Float) {
        self.n = max(n, 1)
        self.gamma = gamma
    }

    /// An aggregated transition: the return, the state k steps on, and γ^k (0 if terminal).
    struct Item {
        var first: Transition
        var nStepReturn: Float
        var nextState: [Float]
        var discount: Float
        var nextMask: [Bool]?
    }

    /// Adds one transition; returns the n-step items that became complete.
    mutating func push(_ t: Transition) -> [Item] {
        var out: [Item] = []
        if let last = window.last, last.nextState != t.state {
            out += flush()
        }
        window.append(t)
        if t.terminal || t.truncated {
            out += flush()
        } else if window.count == n {
            out.append(aggregate(from: 0))
            window.removeFirst()
        }
        return out
    }

    /// Emits every pending transition with the steps it has (end of data).
    mutating func flush() -> [Item] {
        let items = window.indices.map { aggregate(from: $0) }
        window.removeAll(keepingCapacity: true)
        return items
    }

    private func aggregate(from j: Int) -> Item {
        var ret: Float = 0, g: Float = 1
        for k in j..<window.count {
            ret += g * window[k].reward
            g *= gamma
        }
        let last = window[window.count - 1]
        // EASY TO MISS: terminal → discount 0 (no bootstrap); truncated → bootstrap as usual.
        return Item(first: window[j], nStepReturn: ret, nextState: last.nextState,
                    discount: last.terminal ? 0 : g, nextMask: last.nextMask)
    }
}

/// A sum-tree over leaf priorities: O(log n) update and prefix-sum search.
public struct SumTree: Sendable {
    /// Number of leaves (a power of two ≥ the requested capacity).
    public let capacity: Int
    private var nodes: [Double]

    /// A tree with at least `capacity` leaves, all zero.
    public init(capacity: Int) {
        var c = 1
        while c < capacity { c <<= 1 }
        self.capacity = c
        nodes = Array(repeating: 0, count: 2 * c)
    }

    /// Sum of all priorities.
    public var total: Double { nodes[1] }

    /// The priority of leaf `i`.
    public func priority(_ i: Int) -> Double { nodes[capacity + i] }

    /// Sets leaf `i` to `p`.
    public mutating func set(_ i: Int, _ p: Double) {
        var k = capacity + i
        nodes[k] = p
        k >>= 1
        while k >= 1 {
            nodes[k] = nodes[2 * k] + nodes[2 * k + 1]
            k >>= 1
        }
    }

    /// The leaf whose prefix-sum interval contains `u` (0 ≤ u < total).
    public func find(_ u: Double) -> Int {
        var k = 1, u = u
        while k < capacity {
            let left = nodes[2 * k]
            if u < left { k = 2 * k } else { u -= left; k = 2 * k + 1 }
        }
        return k - capacity
    }
}

/// A ring buffer of n-step transitions with uniform or prioritized sampling.
public struct ReplayBuffer: Sendable {
    /// Transitions kept; the oldest is overwritten first.
    public let capacity: Int
    /// State width.
    public let inputCount: Int
    /// Number of actions (mask width).
    public let actionCount: Int
    /// Number of transitions stored.
    public private(set) var count = 0
    private var next = 0
    private var states: [Float]
    private var nextStates: [Float]
    private var actions: [Int32]
    private var returns: [Float]
    private var discounts: [Float]
    private var masks: [Bool]
    private var incumbent: [Bool]
    // Prioritized replay (nil = uniform).
    private var tree: SumTree?
    private let alpha: Double
    private var maxPriority: Double = 1
    /// Added to |TD error| so that no transition gets priority 0.
    public let priorityEpsilon: Double = 1e-6

    /// A buffer for `capacity` transitions; `prioritizedAlpha` nil = uniform sampling,
    /// else priorities p = (|δ| + ε)^α.
    public init(capacity: Int, inputCount: Int, actionCount: Int, prioritizedAlpha: Double? = nil) {
        self.capacity = max(capacity, 1)
        self.inputCount = inputCount
        self.actionCount = actionCount
        states = .init(repeating: 0, count: self.capacity * inputCount)
        nextStates = .init(repeating: 0, count: self.capacity * inputCount)
        actions = .init(repeating: 0, count: self.capacity)
        returns = .init(repeating: 0, count: self.capacity)
        discounts = .init(repeating: 0, count: self.capacity)
        masks = .init(repeating: true, count: self.capacity * actionCount)
        incumbent = .init(repeating: false, count: self.capacity)
        alpha = prioritizedAlpha ?? 0
        tree = prioritizedAlpha.map { _ in SumTree(capacity: self.capacity) }
    }

    /// Whether sampling is prioritized.
    public var isPrioritized: Bool { tree != nil }

    /// Stores a (normalised) n-step transition, with the highest priority seen so far.
    mutating func add(state: [Float], action: Int, nStepReturn: Float, nextState: [Float], discount: Float,
                      nextMask: [Bool]?, fromIncumbent: Bool) {
        let i = next
        let n = inputCount
        for k in 0..<n { states[i * n + k] = state[k]; nextStates[i * n + k] = nextState[k] }
        actions[i] = Int32(action)
        returns[i] = nStepReturn
        discounts[i] = discount
        for a in 0..<actionCount { masks[i * actionCount + a] = nextMask.map { a < $0.count && $0[a] } ?? true }
        incumbent[i] = fromIncumbent
        tree?.set(i, maxPriority)
        next = (next + 1) % capacity
        count = min(count + 1, capacity)
    }

    /// Fills `batch` with `batch.count` samples. Prioritized: stratified by priority, with
    /// importance weights (N · P(i))^−β normalised by their largest value in the batch.
    /// Uniform: weights 1.
    public func sample(into batch: inout Batch, beta: Double, rng: inout SeededGenerator) {
        precondition(count > 0, "sampling an empty replay buffer")
        let B = batch.count, n = inputCount, A = actionCount
        if let tree {
            let segment = tree.total / Double(B)
            var maxW = 0.0
            for b in 0..<B {
                let u = min((Double(b) + rng.nextUnit()) * segment, tree.total.nextDown)
                var i = tree.find(u)
                if i >= count { i = count - 1 }
                batch.indices[b] = i
                let p = tree.priority(i) / tree.total
                let w = p > 0 ? (Double(count) * p).power(-beta) : 0
                batch.weights[b] = Float(w)
                maxW = max(maxW, w)
            }
            if maxW > 0 { for b in 0..<B { batch.weights[b] = Float(Double(batch.weights[b]) / maxW) } }
        } else {
            for b in 0..<B {
                batch.indices[b] = Int(rng.next() % UInt64(count))
                batch.weights[b] = 1
            }
        }
        for b in 0..<B {
            let i = batch.indices[b]
            for k in 0..<n {
                batch.states[b * n + k] = states[i * n + k]
                batch.nextStates[b * n + k] = nextStates[i * n + k]
            }
            batch.actions[b] = Int(actions[i])
            batch.returns[b] = returns[i]
            batch.discounts[b] = discounts[i]
            for a in 0..<A { batch.nextMasks[b * A + a] = masks[i * A + a] }
            batch.fromIncumbent[b] = incumbent[i]
        }
    }

    /// Sets the priorities of `indices` from their TD errors: p = (|δ| + ε)^α.
    public mutating func updatePriorities(_ indices: [Int], tdErrors: [Float]) {
        guard tree != nil else { return }
        for (i, d) in zip(indices, tdErrors) {
            let p = (Double(abs(d)) + priorityEpsilon).power(alpha)
            tree!.set(i, p)
            maxPriority = max(maxPriority, p)
        }
    }

    /// The sampling probability of slot `i` (prioritized; 1/count when uniform).
    public func probability(_ i: Int) -> Double {
        guard let tree else { return 1 / Double(count) }
        return tree.priority(i) / tree.total
    }
}

extension Double {
    func power(_ e: Double) -> Double { _pow(self, e) }
}

#if canImport(Glibc)
import Glibc
private func _pow(_ a: Double, _ b: Double) -> Double { Glibc.pow(a, b) }
#elseif canImport(Darwin)
import Darwin
private func _pow(_ a: Double, _ b: Double) -> Double { Darwin.pow(a, b) }
#endif
