// The control-group guard: after a promotion, a share of blocks goes back to the previous
// controller, each paired with the adjacent block of the served model, and the guard trips
// when the served model is worse than that control group with the configured confidence
// (docs/learning.md, "The switchback trial and the control group").
//
// A pure value type like SwitchbackTrial: the caller feeds closed transitions and acts on the
// events. `record` and `skip` allocate nothing (the guard writes into rings sized in `init`).

import EdgeQCore
import EdgeQTopicMap

/// Who acts during a control-group guard's block.
public enum GuardArm: String, Sendable, Equatable {
    /// The model being served.
    case served
    /// The previous controller, for a control block.
    case control
}

/// What the caller must do after a tick it fed to the guard.
public enum GuardEvent: Sendable, Equatable {
    /// A block ended and the other arm acts from the next tick: hand over to it.
    case switched(to: GuardArm)
    /// The served model is worse than the control group with the configured confidence: take
    /// it out of service (the guard takes no more ticks; `summary` has the figures).
    case tripped
}

/// Compares the served model with a control group kept by the previous controller.
///
/// **Design.** Blocks are as in the trial (`TrialConfig.block` ticks with `burnIn` unscored,
/// or one whole episode, so episodic plants compare episode returns, never a per-tick mean).
/// With `share` p > 0, blocks come in cycles of m = round(1/p) (at least 2): in each cycle one
/// pair of adjacent blocks, at a random position and in a random order, is one control block
/// and one served block; the other m − 2 blocks are served and not compared. The control
/// group's share of blocks is 1/m (`effectiveShare`). p = 0 turns the guard off: every block is
/// served and nothing is compared. With `probationPairs` k > 0 the first k cycles have two blocks
/// each (a control block beside every served block, in random order): a probation right after a
/// promotion, when a model has not yet been seen serving, that gives the guard k pairs in 2k
/// blocks instead of km.
///
/// **Statistics.** Per complete pair, d = served return − control return (with a tolerance τ,
/// d′ = d + τ·|control return|). After every pair, with n = the last `windowPairs` pairs (at
/// least `minPairs`), the guard trips when mean(d′) + t·s(d′)/√n < 0, t being the one-sided
/// Student-t quantile at level α / `looksPerBudget` (α = 1 − confidence, n − 1 degrees of
/// freedom). Bonferroni over looks: among any `looksPerBudget` consecutive looks at a served
/// model as good as the control, a false trip has probability at most α (over N looks, at most
/// α·N / `looksPerBudget`); the per-look threshold stays the same however long the model serves.
/// Pairs are adjacent in time, so a disturbance shared by both blocks (setpoints, weather,
/// load) cancels in d.
///
/// **The trial's noise.** A model promoted by a switchback trial against the controller that is
/// now its control group was measured on the same contrast, block for block: the trial's pairs
/// estimate the noise of d. With that estimate (`PairNoise`: its variance s²ₜ on kₜ = pairs − 1
/// degrees of freedom) the guard pools it with its own window's: s² = (kₜ·s²ₜ + (n − 1)·s²ₙ) /
/// (kₜ + n − 1), on kₜ + n − 1 degrees of freedom, and looks from its second pair on. The
/// means are not pooled — only the trial's spread is borrowed, never its verdict. Valid as long
/// as the pairs' noise after the promotion is about what it was during the trial; a season
/// whose blocks vary more than the trial's did adds to the guard's own share of s².
public struct ControlGroupGuard: Sendable {
    /// The guard's settings.
    public struct Settings: Sendable, Equatable {
        /// Block length (as the trial's).
        public var block: TrialConfig.Block
        /// Unscored ticks at the start of each tick block.
        public var burnIn: Int
        /// Share of blocks for the control group, in [0, 0.5]; 0: the guard is off.
        public var share: Double
        /// Recent pairs compared, ≥ 2.
        public var windowPairs: Int
        /// Confidence of a trip, in (0.5, 1).
        public var confidence: Double
        /// Pairs before the first look, in 2...windowPairs. Default 4.
        public var minPairs = 4
        /// Looks the error budget α is split over (see the type's comment), ≥ 1. Default 100.
        public var looksPerBudget = 100
        /// Share of the control's |block return| the served model may be worse by before it
        /// counts as worse, ≥ 0. Default 0.
        public var tolerance = 0.0
        /// Cycles of two blocks (probation) before the cycles of m, ≥ 0. Default 0.
        public var probationPairs = 0
        /// The stop-loss share (> 0; the trial's `stop_loss`): the guard trips at once on a
        /// compared pair whose served block lost more than this share of its control block's
        /// |return| — and more than five of a pair's spread, and the window's lead (see
        /// `stopLossCheck`). nil: no stop-loss, the statistics alone. Default nil; the mapping's
        /// settings take the trial's.
        public var stopLoss: Double?

        /// Settings given one by one.
        public init(block: TrialConfig.Block, burnIn: Int, share: Double, windowPairs: Int, confidence: Double) {
            self.block = block
            self.burnIn = burnIn
            self.share = share
            self.windowPairs = windowPairs
            self.confidence = confidence
        }

        /// The mapping's settings: the trial's block, burn-in and confidence,
        /// `promotion.control_share` and `promotion.guard_pairs`.
        public init(learning l: LearningConfig) {
            self.init(block: l.trial.block, burnIn: l.trial.burnIn, share: l.controlShare, windowPairs: l.guardPairs,
                      confidence: l.trial.confidence)
            minPairs = min(l.trial.minPairs, l.guardPairs)
            probationPairs = l.probationPairs
            stopLoss = l.trial.stopLoss
        }
    }

    /// The noise of the pair differences as a switchback trial measured it (`EdgeQGateway.PairNoise`).
    public typealias PairNoise = EdgeQGateway.PairNoise

    /// The settings it runs with.
    public let settings: Settings
    /// The trial's noise it pools with its own (nil: its own window alone).
    public let borrowedNoise: PairNoise?
    /// Pairs in the window before the first look: `settings.minPairs`, or 2 with `borrowedNoise`.
    private let firstLook: Int
    private var rng: SeededGenerator
    private var clock: BlockClock
    /// Blocks per cycle (2 in probation, then m), the index of the running block in its cycle,
    /// the first block of the cycle's pair and whether the control block comes first in it.
    private var cycle: Int
    /// Blocks per cycle after probation (m; 0: the guard is off).
    private let steadyCycle: Int
    /// Probation cycles still to run, the running one included.
    private var probationLeft: Int
    private var index = 0
    private var pairAt = 0
    private var controlFirst = false
    private var servedReturn: Double?
    private var controlReturn: Double?
    private var servedBaseline = 0.0
    private var controlBaseline = 0.0
    /// Whether pair differences are adjusted by an exogenous baseline (as the trial's).
    public let adjusted: Bool
    /// The last `windowPairs` scored pairs' returns and baselines (ring buffers).
    private var servedWindow: [Double]
    private var controlWindow: [Double]
    private var servedBaseWindow: [Double]
    private var controlBaseWindow: [Double]
    private var windowCount = 0
    private var windowNext = 0
    /// One-sided t quantiles at level α / looksPerBudget for n = minPairs ... windowPairs.
    private let quantiles: [Double]
    private var pairs = 0
    private var voidPairs = 0
    private var ticks = 0
    /// Whether it tripped (it takes no more ticks then).
    public private(set) var hasTripped = false
    /// The pair that tripped the stop-loss (nil: it did not; a trip by the statistics leaves it nil).
    public private(set) var stopLossTrip: GuardStopLoss?
    /// Pairs carried over from a guard of the same served model and control group before a
    /// restart (`resume`); 0 when it started afresh.
    public private(set) var resumedPairs = 0
    /// Probation pairs asked for (`requestProbation`) and not yet begun: they begin at the next
    /// block boundary that is not between the two blocks of a compared pair.
    private var pendingProbation = 0
    /// What the hand-overs between its blocks cost (`GuardSwitching`), and the arm of the block
    /// before the running one (the served model's before the first; nil after a block that got
    /// no reward at all — a trial's block, whose controller the guard does not know).
    public private(set) var switching = GuardSwitching()
    private var previousArm: GuardArm? = .served

    /// A guard with `settings`; `seed` draws the position and order of every pair.
    ///
    /// - Throws: `TrialSettingsError` when a setting is out of range (share outside [0, 0.5],
    ///   windowPairs < 2, minPairs outside 2...windowPairs, confidence outside (0.5, 1),
    ///   looksPerBudget < 1, tolerance < 0, or a block or burn-in the trial would refuse).
    ///
    /// With `adjusted`, every pair difference is adjusted by the exogenous baselines passed to
    /// `record(reward:baseline:arm:episodeEnded:)`, as in `SwitchbackTrial`. With `noise`, the
    /// trial's estimate of the pairs' noise is pooled with the guard's own (see the type's comment).
    public init(settings s: Settings, seed: UInt64, adjusted: Bool = false, noise: PairNoise? = nil) throws(TrialSettingsError) {
        guard (0...0.5).contains(s.share) else {
            throw TrialSettingsError(message: "control_share must be in [0, 0.5] (0 turns the guard off), found \(s.share)")
        }
        guard s.windowPairs >= 2 else { throw TrialSettingsError(message: "guard_pairs must be ≥ 2, found \(s.windowPairs)") }
        guard s.minPairs >= 2, s.minPairs <= s.windowPairs else {
            throw TrialSettingsError(message: "the guard's minPairs must be in 2...\(s.windowPairs) (guard_pairs), found \(s.minPairs)")
        }
        guard s.looksPerBudget >= 1 else { throw TrialSettingsError(message: "looksPerBudget must be ≥ 1, found \(s.looksPerBudget)") }
        guard s.tolerance >= 0, s.tolerance.isFinite else { throw TrialSettingsError(message: "tolerance must be ≥ 0, found \(s.tolerance)") }
        guard s.probationPairs >= 0 else { throw TrialSettingsError(message: "probation_pairs must be ≥ 0, found \(s.probationPairs)") }
        var trial = TrialConfig()
        trial.block = s.block
        trial.burnIn = s.burnIn
        trial.confidence = s.confidence
        try SwitchbackTrial.validate(trial)
        settings = s
        self.adjusted = adjusted
        rng = SeededGenerator(seed: seed)
        clock = BlockClock(block: s.block, burnIn: s.burnIn)
        steadyCycle = Self.blocksPerCycle(share: s.share)
        probationLeft = steadyCycle > 0 ? s.probationPairs : 0
        cycle = probationLeft > 0 ? 2 : steadyCycle
        servedWindow = [Double](repeating: 0, count: s.windowPairs)
        controlWindow = [Double](repeating: 0, count: s.windowPairs)
        servedBaseWindow = [Double](repeating: 0, count: s.windowPairs)
        controlBaseWindow = [Double](repeating: 0, count: s.windowPairs)
        borrowedNoise = noise
        firstLook = noise == nil ? s.minPairs : min(2, s.minPairs)
        let level = (1 - s.confidence) / Double(s.looksPerBudget)
        let borrowed = noise?.degreesOfFreedom ?? 0
        quantiles = (firstLook...s.windowPairs).map { StudentT.quantile(1 - level, degreesOfFreedom: Double(borrowed + $0 - 1)) }
        if cycle > 0 { drawPair() }
    }

    private mutating func drawPair() {
        pairAt = Int(rng.next() % UInt64(cycle - 1))
        controlFirst = rng.next() & 1 == 0
    }

    /// Blocks per cycle after probation for a control share: m = round(1 / share), at least 2;
    /// 0 when the share is 0 (the guard is off).
    public static func blocksPerCycle(share: Double) -> Int {
        share > 0 ? max(2, Int((1 / share).rounded())) : 0
    }

    /// Whether the guard compares anything (share > 0).
    public var isActive: Bool { cycle > 0 }

    /// One compared pair: the served block's and the control block's return and exogenous
    /// baseline sum (0 when not adjusted), as the window holds it.
    public struct ComparedPair: Sendable, Equatable {
        /// The served block's return.
        public var served: Double
        /// The control block's return.
        public var control: Double
        /// The served block's baseline sum (0 when the guard is not adjusted).
        public var servedBaseline: Double
        /// The control block's baseline sum (0 when the guard is not adjusted).
        public var controlBaseline: Double

        /// A pair given figure by figure.
        public init(served: Double, control: Double, servedBaseline: Double = 0, controlBaseline: Double = 0) {
            self.served = served
            self.control = control
            self.servedBaseline = servedBaseline
            self.controlBaseline = controlBaseline
        }
    }

    /// Scored pairs since the guard started (resumed ones included): changes once a compared
    /// pair ends. Reading it allocates nothing.
    public var comparedPairs: Int { pairs }

    /// The window's pairs, oldest first (allocates: read it when `comparedPairs` changed).
    public var window: [ComparedPair] {
        let start = windowCount < settings.windowPairs ? 0 : windowNext
        return (0..<windowCount).map { k in
            let i = (start + k) % settings.windowPairs
            return ComparedPair(served: servedWindow[i], control: controlWindow[i],
                                servedBaseline: servedBaseWindow[i], controlBaseline: controlBaseWindow[i])
        }
    }

    /// Continues the evidence of a guard of the same served model against the same control
    /// group that stopped (a gateway restart): its window's pairs (the newest `windowPairs` of
    /// them are kept), its counts, its switching figures (`switching`; ignored when malformed)
    /// and the probation it had left (at most this guard's). Call it
    /// before the first tick; the running cycle is drawn again for the probation left. The
    /// looks go on from the window as it was: the next pair is looked at with the resumed ones.
    ///
    /// - Returns: false (and nothing changed) when the guard is off, has been fed, has tripped
    ///   or a figure is not finite.
    @discardableResult
    public mutating func resume(window pairs: [ComparedPair], scoredPairs: Int, voidPairs void: Int, probationPairsLeft: Int,
                                switching carried: GuardSwitching? = nil) -> Bool {
        guard cycle > 0, ticks == 0, !hasTripped, self.pairs == 0 else { return false }
        guard pairs.allSatisfy({ $0.served.isFinite && $0.control.isFinite && $0.servedBaseline.isFinite && $0.controlBaseline.isFinite }) else { return false }
        for p in pairs.suffix(settings.windowPairs) {
            servedWindow[windowNext] = p.served
            controlWindow[windowNext] = p.control
            servedBaseWindow[windowNext] = adjusted ? p.servedBaseline : 0
            controlBaseWindow[windowNext] = adjusted ? p.controlBaseline : 0
            windowNext = (windowNext + 1) % settings.windowPairs
            windowCount = min(windowCount + 1, settings.windowPairs)
        }
        self.pairs = max(scoredPairs, pairs.count)
        voidPairs = max(0, void)
        if let carried, carried.isValid { switching = carried }
        resumedPairs = self.pairs
        let left = min(max(0, probationPairsLeft), probationLeft)
        if left != probationLeft {
            probationLeft = left
            cycle = left > 0 ? 2 : steadyCycle
            drawPair()
        }
        return true
    }

    /// The control group's actual share of blocks after probation: 1 / round(1 / share), or 0.
    public var effectiveShare: Double { steadyCycle > 0 ? 1 / Double(steadyCycle) : 0 }

    /// Probation cycles (of two blocks, one pair each) still to run, the running one included.
    public var probationPairsLeft: Int { probationLeft }

    /// Probation pairs asked for by `requestProbation` that have not begun yet.
    public var probationPairsPending: Int { pendingProbation }

    /// Asks for a probation of `pairs` cycles of two blocks from now on (at least; one under
    /// way is extended to it), as after a promotion: the gateway asks when the plant goes where
    /// the served model's trial never saw it. It begins at once when no block is under way and
    /// the next block is not the second of a compared pair, else at the end of the running block
    /// (after the pair's second block, when a compared pair is under way). Nothing when the
    /// guard is off or tripped, or `pairs` < 1. Allocates nothing.
    public mutating func requestProbation(pairs k: Int) {
        guard cycle > 0, !hasTripped, k > 0 else { return }
        pendingProbation = max(pendingProbation, k)
        if clock.ticks == 0 { beginPendingProbation() }
    }

    /// At a block boundary: the pending probation begins unless the next block is the second
    /// of a compared pair.
    private mutating func beginPendingProbation() {
        guard pendingProbation > 0, !(index == pairAt + 1 && index < cycle) else { return }
        probationLeft = max(probationLeft, pendingProbation)
        pendingProbation = 0
        index = 0
        cycle = 2
        drawPair()
    }

    /// Whether the running block is one of the cycle's compared pair (a control block or the
    /// served block it is paired with). While a switchback trial runs, the gateway gives these
    /// blocks to the guard and the others to the trial, so the guard keeps watching.
    public var inComparedPair: Bool { cycle > 0 && (index == pairAt || index == pairAt + 1) }

    /// Starts the running block afresh when it is not one of the compared pair (its ticks so
    /// far are forgotten; nothing was to be scored in it): a switchback trial that starts now
    /// then has its blocks aligned with the guard's. Returns whether it did.
    @discardableResult
    public mutating func restartUncomparedBlock() -> Bool {
        guard cycle > 0, !inComparedPair else { return false }
        clock.reset()
        return true
    }

    /// Who acts on the next tick.
    public var arm: GuardArm {
        guard cycle > 0 else { return .served }
        if index == pairAt { return controlFirst ? .control : .served }
        if index == pairAt + 1 { return controlFirst ? .served : .control }
        return .served
    }

    /// Feeds one closed transition: its reward, the arm that acted when it was opened, and
    /// whether an episode ended with it. A transition opened by the other arm than the current
    /// block's is counted as skipped.
    ///
    /// - Returns: `.switched(to:)` when a block ended and the other arm takes over, `.tripped`
    ///   when the served model is worse than the control group, nil otherwise (always nil once
    ///   tripped, and when the guard is off).
    public mutating func record(reward: Double, arm acted: GuardArm, episodeEnded: Bool) -> GuardEvent? {
        record(reward: reward, baseline: 0, arm: acted, episodeEnded: episodeEnded)
    }

    /// `record(reward:arm:episodeEnded:)` with the tick's exogenous baseline (ignored unless the
    /// guard is `adjusted`; a tick whose baseline is not finite is then not scored).
    ///
    /// - Returns: as `record(reward:arm:episodeEnded:)`.
    public mutating func record(reward: Double, baseline: Double, arm acted: GuardArm, episodeEnded: Bool) -> GuardEvent? {
        let usable = acted == arm && reward.isFinite && (!adjusted || baseline.isFinite)
        return feed(reward: usable ? reward : nil, baseline: adjusted && usable ? baseline : 0, episodeEnded: episodeEnded)
    }

    /// Feeds a tick that must not be scored (unusable state, fallback or hold, no reward).
    ///
    /// - Returns: as `record`.
    public mutating func skip(episodeEnded: Bool = false) -> GuardEvent? {
        feed(reward: nil, episodeEnded: episodeEnded)
    }

    private mutating func feed(reward: Double?, baseline: Double = 0, episodeEnded: Bool) -> GuardEvent? {
        guard cycle > 0, !hasTripped else { return nil }
        ticks += 1
        if let reward { switching.rewards += reward }
        guard clock.tick(reward: reward, baseline: baseline, episodeEnded: episodeEnded) else { return nil }
        let ended = arm
        if let previousArm { switching.count(clock.burnInShortfall, arm: ended, previous: previousArm) }
        previousArm = clock.burnInRewards == 0 && clock.scoredTicks == 0 ? nil : ended
        let inPair = index == pairAt || index == pairAt + 1
        if inPair {
            if ended == .served {
                servedReturn = clock.blockReturn
                servedBaseline = clock.blockBaseline ?? 0
            } else {
                controlReturn = clock.blockReturn
                controlBaseline = clock.blockBaseline ?? 0
            }
        }
        clock.reset()
        if index == pairAt + 1 {
            if let s = servedReturn, let c = controlReturn {
                pairs += 1
                servedWindow[windowNext] = s
                controlWindow[windowNext] = c
                servedBaseWindow[windowNext] = adjusted ? servedBaseline : 0
                controlBaseWindow[windowNext] = adjusted ? controlBaseline : 0
                windowNext = (windowNext + 1) % settings.windowPairs
                windowCount = min(windowCount + 1, settings.windowPairs)
                if let stop = stopLossCheck(served: s, control: c) {
                    stopLossTrip = stop
                    hasTripped = true
                    return .tripped
                }
                if look() {
                    hasTripped = true
                    return .tripped
                }
            } else {
                voidPairs += 1
            }
            servedReturn = nil
            controlReturn = nil
        }
        index += 1
        if index == cycle {
            index = 0
            if probationLeft > 0 {
                probationLeft -= 1
                if probationLeft == 0 { cycle = steadyCycle }
            }
            drawPair()
        }
        beginPendingProbation()
        return arm != ended ? .switched(to: arm) : nil
    }

    /// The stop-loss on the pair just added to the window (the newest), served return `served`
    /// and control return `control`: the same rule as the trial's stop-loss
    /// (`SwitchbackTrial.stopLossCheck`), on a whole block. The served block's deficit against
    /// its control block (adjusted by the baselines when the guard is) must exceed the share of
    /// the control block's |return| (doubled while the pair's spread is not known) and five of a
    /// pair's spread — √2 × the spread of the window's control blocks, pooled with the
    /// promoting trial's pairs as the looks pool them, known from two degrees of freedom — and,
    /// besides, what the served model gained over the window's other pairs (its lead): a model
    /// ahead on average may lose that much in one block before the statistics judge it. A
    /// limit of 0 (no scale, no spread: rewards that are all 0) stops nothing.
    ///
    /// Why: the looks judge a mean, at α / `looksPerBudget` each; one block far beyond
    /// anything the control group does moves that mean little — on the tank (2026-12-07) a
    /// model 12.8 % better in its trial had pairs of −0.2 … +2.4 and one block of −23.4 against
    /// its control block's −2.9, and served on untripped.
    private func stopLossCheck(served: Double, control: Double) -> GuardStopLoss? {
        guard let share = settings.stopLoss, windowCount > 0 else { return nil }
        let newest = (windowNext + settings.windowPairs - 1) % settings.windowPairs
        func difference(_ i: Int) -> Double {
            servedWindow[i] - controlWindow[i] - (servedBaseWindow[i] - controlBaseWindow[i])
        }
        let deficit = -difference(newest)
        guard deficit > 0 else { return nil }
        var controls = RunningMoments()
        var lead = 0.0
        for i in 0..<windowCount {
            controls.add(controlWindow[i] - controlBaseWindow[i])
            if i != newest { lead += difference(i) }
        }
        let pair = SwitchbackTrial.pairSpread(referenceBlocks: controls, borrowed: borrowedNoise)
        let known = pair.degreesOfFreedom >= SwitchbackTrial.stopLossSpreadDegreesOfFreedom
        let shareLimit = share * (known ? 1 : SwitchbackTrial.unknownSpreadShareFactor) * abs(control)
        let limit = max(shareLimit, SwitchbackTrial.stopLossPairSpreads * pair.sd)
        let ahead = max(0, lead)
        guard limit > 0, deficit > limit + ahead else { return nil }
        return GuardStopLoss(served: served, control: control, deficit: deficit, limit: limit, share: share, lead: ahead,
                             spreadKnown: known, adjusted: adjusted)
    }

    /// Mean and sample standard deviation of d′ (with `tolerance`) or d over the window; d
    /// adjusted by the baselines when `adjust` (0 baselines when the guard is not adjusted).
    private func windowMoments(tolerance: Double, adjust: Bool = true) -> RunningMoments {
        var m = RunningMoments()
        for i in 0..<windowCount {
            let shift = adjust ? servedBaseWindow[i] - controlBaseWindow[i] : 0
            m.add(servedWindow[i] - controlWindow[i] - shift + tolerance * abs(controlWindow[i]))
        }
        return m
    }

    private var currentQuantile: Double? {
        guard windowCount >= firstLook else { return nil }
        return quantiles[windowCount - firstLook]
    }

    /// The standard deviation of d the looks use: the window's own, pooled with the trial's.
    private func lookDeviation(_ m: RunningMoments) -> Double {
        guard let b = borrowedNoise else { return m.standardDeviation }
        let own = m.standardDeviation * m.standardDeviation * Double(m.count - 1)
        return ((Double(b.degreesOfFreedom) * b.variance + own) / Double(b.degreesOfFreedom + m.count - 1)).squareRoot()
    }

    private func look() -> Bool {
        guard let t = currentQuantile else { return false }
        let m = windowMoments(tolerance: settings.tolerance)
        return m.mean + t * lookDeviation(m) / Double(m.count).squareRoot() < 0
    }

    /// The guard's figures over its window, for reports.
    public var summary: GuardSummary {
        var s = GuardSummary(pairs: pairs, voidPairs: voidPairs, windowPairs: windowCount, ticks: ticks,
                             effectiveShare: effectiveShare, confidence: settings.confidence, tripped: hasTripped)
        s.borrowedNoise = borrowedNoise
        s.probationPairsLeft = probationLeft
        s.resumedPairs = resumedPairs
        s.probationPairsPending = pendingProbation
        s.stopLoss = stopLossTrip
        s.switching = switching
        guard windowCount > 0 else { return s }
        let m = windowMoments(tolerance: 0)
        s.adjusted = adjusted
        s.meanDifference = m.mean
        s.rawMeanDifference = windowMoments(tolerance: 0, adjust: false).mean
        var served = 0.0, control = 0.0
        for i in 0..<windowCount {
            served += servedWindow[i]
            control += controlWindow[i]
        }
        s.meanServed = served / Double(windowCount)
        s.meanControl = control / Double(windowCount)
        if let t = currentQuantile {
            let half = t * lookDeviation(m) / Double(m.count).squareRoot()
            s.interval = (m.mean - half)...(m.mean + half)
        }
        return s
    }
}

/// The control-group guard's figures, for reports.
public struct GuardSummary: Sendable, Equatable {
    /// Scored pairs since the guard started.
    public var pairs: Int
    /// Pairs left out because a block had fewer than half of its ticks scored.
    public var voidPairs: Int
    /// Pairs in the window the figures below are over.
    public var windowPairs: Int
    /// Ticks fed.
    public var ticks: Int
    /// The control group's share of blocks.
    public var effectiveShare: Double
    /// The guard's confidence.
    public var confidence: Double
    /// Whether it tripped.
    public var tripped: Bool
    /// Whether the pair differences were adjusted by an exogenous baseline (then
    /// `meanDifference` and `interval` are the adjusted ones).
    public var adjusted = false
    /// Mean over the window of served − control block return, adjusted when `adjusted`.
    public var meanDifference: Double?
    /// Mean over the window of the raw served − control block return.
    public var rawMeanDifference: Double?
    /// The interval on it with the Bonferroni-corrected t quantile a trip uses (nil before
    /// the first look: `minPairs` pairs, or 2 with the trial's noise).
    public var interval: ClosedRange<Double>?
    /// The promoting trial's estimate of the pairs' noise, pooled with the window's (nil: the
    /// window's alone).
    public var borrowedNoise: ControlGroupGuard.PairNoise?
    /// Probation cycles (two blocks, one pair each) still to run before the cycles of
    /// round(1 / share) blocks (0: none, or over).
    public var probationPairsLeft = 0
    /// Pairs carried over from before a gateway restart (`ControlGroupGuard.resume`; counted
    /// in `pairs`).
    public var resumedPairs = 0
    /// Probation pairs asked for (a novel condition) that begin at the next block boundary.
    public var probationPairsPending = 0
    /// The pair that tripped the guard's stop-loss (nil: none did).
    public var stopLoss: GuardStopLoss?
    /// What the hand-overs between the guard's blocks cost the plant (since the guard started,
    /// with what it resumed).
    public var switching = GuardSwitching()
    /// The served model's mean block return over the window's pairs.
    public var meanServed: Double?
    /// The control group's mean block return over the window's pairs.
    public var meanControl: Double?
}

/// The compared pair that tripped the guard's stop-loss (`ControlGroupGuard.Settings.stopLoss`).
public struct GuardStopLoss: Sendable, Equatable {
    /// The served block's return (raw).
    public var served: Double
    /// Its control block's return (raw).
    public var control: Double
    /// What the served block lost against the control block (adjusted by the exogenous
    /// baselines when the guard is).
    public var deficit: Double
    /// The limit it exceeded, besides `lead`: the share of |control| (doubled while the spread
    /// was not known) or five of a pair's spread, whichever is larger.
    public var limit: Double
    /// The stop-loss share.
    public var share: Double
    /// What the served model had gained over the window's other pairs (≥ 0), allowed on top.
    public var lead: Double
    /// Whether a pair's spread was known (two degrees of freedom or more).
    public var spreadKnown: Bool
    /// Whether `deficit` is adjusted.
    public var adjusted: Bool
}

/// What the control-group guard's hand-overs cost the plant (docs/operations.md, "The control-group
/// guard"): as the trial's switching cost (`TrialSummary.switchingCost`), per block of the guard
/// that ended with a burn-in reward and a scored tick, the burn-in's rewards below the block's
/// own scored mean reward (`BlockClock.burnInShortfall`), counted by whether the block began
/// with a switch — to the control group or back to the served model — or followed a block of
/// its own arm. While a switchback trial runs, the guard's uncompared blocks are the trial's and
/// carry no reward here: the trial counts their switches, and a guard block right after one is
/// not counted (who handed over to it is the trial's business). Not used in any decision. Plain sums
/// and counts, so the guard's record keeps them over a restart (`guard.json`, `switching`).
public struct GuardSwitching: Codable, Sendable, Equatable {
    /// Blocks that began with a switch to the control group, and their burn-ins' shortfall
    /// summed (negative: the burn-ins lost that much).
    public var toControl = 0
    /// See `toControl`.
    public var toControlShortfall = 0.0
    /// Blocks that began with a switch back to the served model, and their shortfall summed.
    public var toServed = 0
    /// See `toServed`.
    public var toServedShortfall = 0.0
    /// Blocks that followed a block of their own arm, and their shortfall summed: how far a
    /// burn-in falls short of its block by chance and drift.
    public var withoutSwitch = 0
    /// See `withoutSwitch`.
    public var withoutSwitchShortfall = 0.0
    /// Every usable reward the guard was fed (burn-ins included): what the plant earned on the
    /// guard's blocks, the base of `share`.
    public var rewards = 0.0

    /// None yet.
    public init() {}

    /// Blocks that began with a switch.
    public var switches: Int { toControl + toServed }
    /// The reward the switches cost the plant: minus the shortfall summed over the blocks that
    /// began with a switch.
    public var cost: Double { -(toControlShortfall + toServedShortfall) }
    /// Mean loss of a switch to the control group (nil before one ended).
    public var lossToControl: Double? { toControl > 0 ? -toControlShortfall / Double(toControl) : nil }
    /// Mean loss of a switch back to the served model (nil before one ended).
    public var lossToServed: Double? { toServed > 0 ? -toServedShortfall / Double(toServed) : nil }
    /// Mean burn-in loss without a switch (nil before such a block ended).
    public var lossWithoutSwitch: Double? { withoutSwitch > 0 ? -withoutSwitchShortfall / Double(withoutSwitch) : nil }
    /// `cost` as a share of |`rewards`| (nil while nothing was earned).
    public var share: Double? { rewards != 0 ? cost / abs(rewards) : nil }

    /// Whether every figure is finite and every count ≥ 0 (a record read from disk).
    public var isValid: Bool {
        toControl >= 0 && toServed >= 0 && withoutSwitch >= 0
            && [toControlShortfall, toServedShortfall, withoutSwitchShortfall, rewards].allSatisfy(\.isFinite)
    }

    /// Counts an ended block of `arm` whose burn-in fell short by `shortfall` (nil: not known),
    /// after a block of `previous`.
    mutating func count(_ shortfall: Double?, arm: GuardArm, previous: GuardArm) {
        guard let shortfall else { return }
        if arm == previous {
            withoutSwitch += 1
            withoutSwitchShortfall += shortfall
        } else if arm == .control {
            toControl += 1
            toControlShortfall += shortfall
        } else {
            toServed += 1
            toServedShortfall += shortfall
        }
    }

    enum CodingKeys: String, CodingKey {
        case rewards
        case toControl = "to_control", toControlShortfall = "to_control_shortfall"
        case toServed = "to_served", toServedShortfall = "to_served_shortfall"
        case withoutSwitch = "without_switch", withoutSwitchShortfall = "without_switch_shortfall"
    }
}
