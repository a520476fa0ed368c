// The switchback trial: a candidate and a reference controller take turns on the plant in
// randomized block pairs, and a paired, Bonferroni-corrected Student-t test decides after
// every pair (docs/learning.md, "The switchback trial and the control group").
//
// Pure value types: no MQTT, no clock, no disk. The caller feeds one closed transition per
// tick and acts on the events. `record` and `skip` allocate nothing.

import EdgeQCore
import EdgeQTopicMap

/// Who acts during a switchback trial's block.
public enum TrialArm: String, Sendable, Equatable {
    /// The retrained model on trial.
    case candidate
    /// The controller in charge before the trial: the incumbent, or the served model.
    case reference

    /// The other arm.
    public var other: TrialArm { self == .candidate ? .reference : .candidate }
}

/// How a switchback trial ended.
public enum TrialVerdict: String, Sendable, Equatable {
    /// Better than the reference with the configured confidence (or, with a margin, not worse
    /// than the margin allows): serve the candidate.
    case promote
    /// Worse than the reference (than the margin allows) with the configured confidence: the
    /// trial stopped at once; the reference stays in charge.
    case reject
    /// The budget (pairs or ticks) ran out without a verdict: not promoted.
    case budgetExhausted = "budget-exhausted"
    /// Shown, with the stop's confidence (`TrialConfig.stopConfidence`), not to be better than
    /// the reference by the futility share (`TrialConfig.futility`): the trial stopped early
    /// without promoting, since the rest of the budget would most likely go to a candidate not
    /// worth it (two models that both balance a cart-pole for nearly every whole episode).
    case futile
}

/// What the caller must do after a tick it fed to a trial.
public enum TrialEvent: Sendable, Equatable {
    /// A block ended and the other arm acts from the next tick: hand over to it.
    case switched(to: TrialArm)
    /// A block ended and the same arm starts the next block (the next pair's random order put
    /// it first): no handover.
    case continued(TrialArm)
    /// The trial is decided; it takes no more ticks.
    case verdict(TrialVerdict)
}

/// Why a trial or guard could not be set up with the given settings. The mapping loader
/// refuses the same values with a line and column; this is for callers that build settings
/// in code.
public struct TrialSettingsError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What is wrong and what to give instead.
    public let message: String
    /// The message.
    public var description: String { message }
}

/// The noise of the pair differences as a switchback trial measured it: the sample
/// variance of its decided pair differences and the degrees of freedom behind it (pairs − 1).
public struct PairNoise: Sendable, Equatable {
    /// Sample variance of the trial's pair differences (> 0).
    public var variance: Double
    /// Its degrees of freedom (the trial's pairs − 1, ≥ 1).
    public var degreesOfFreedom: Int

    /// The trial's figures, or nil when they estimate nothing (fewer than two pairs, or a
    /// standard deviation that is not positive and finite).
    public init?(standardDeviation: Double, pairs: Int) {
        guard pairs >= 2, standardDeviation.isFinite, standardDeviation > 0 else { return nil }
        variance = standardDeviation * standardDeviation
        degreesOfFreedom = pairs - 1
    }
}

/// A switchback trial between a candidate and a reference controller.
///
/// **Design.** Time is cut into blocks: `TrialConfig.block` ticks on a continuing plant, or one
/// whole episode on an episodic plant. Blocks come in pairs, one block per arm, the order of
/// each pair drawn from a generator seeded with `seed`. The first `burnIn` ticks of every tick
/// block are not scored (the plant settles after the switch). A block's return is the sum of
/// its scored rewards; ticks the caller marks unusable (`skip`) are not scored, and the block's
/// return is then its mean scored reward times its nominal scored length (block − burn-in
/// ticks, or the episode's ticks); a block with fewer than half of those scored is void, and
/// so is its pair. Per complete pair, d = candidate return − reference return.
///
/// **Statistics.** The test looks after every pair from `minPairs` on, at most
/// L = `maxPairs − minPairs + 1` times, so it is made valid under this optional stopping by
/// a weighted Bonferroni split of α = 1 − confidence: the last look (after the budget's last
/// pair) uses level w·α with w = `lastLookShare`, each of the at most L − 1 looks before it
/// (1 − w)·α / (L − 1) — or every look α / L when `lastLookShare` is nil. Each look is a
/// one-sided Student-t bound at its level (n − 1 degrees of freedom, the t quantile computed
/// here from the regularized incomplete beta function). With margin m, the tested per-pair
/// value is d′ = d + m·|reference return|:
/// - promote when mean(d′) − t·s(d′)/√n > 0 (better, or not worse than m, with the confidence);
/// - reject when mean(d′) + t·s(d′)/√n < 0 (worse than m allows, with the confidence);
/// - futile, with futility share f, when mean(d″) + t_stop·s(d″)/√n < 0 for d″ = d′ − f·|reference
///   return|: the candidate is shown not to be better than f of the reference's block return
///   (with the margin: d′ not above f). Like reject, a stop that only loses a candidate, so it
///   uses the stop's bound (below);
/// - budget exhausted after `maxPairs` pairs (void ones included) or `maxTicks` ticks.
///
/// **Early stop.** Before `minPairs` pairs the trial's own spread says too little to stop
/// anything. Given an earlier trial's estimate of the pairs' noise on this plant (`PairNoise`:
/// its variance s²ₑ on kₑ degrees of freedom, the same blocks and adjustment), it also looks
/// after each pair n = 1 … `minPairs` − 1, pooling that estimate with its own pairs'
/// (s² = (kₑ·s²ₑ + (n − 1)·s²ₙ) / (kₑ + n − 1), kₑ + n − 1 degrees of freedom), and rejects
/// when mean(d′) + t·s/√n < 0 with t at the level of a corrected look before the last (as rare
/// for a candidate as good as the reference as a false promotion at one look). Only a
/// clearly worse candidate stops there — one the plant would otherwise run for `minPairs`
/// blocks; on the thermal zone that is 12 days of a candidate that may cost several times
/// the reference. It never promotes (the promotion's looks use the trial's own pairs only)
/// and adds nothing from `minPairs` on.
///
/// By the union bound over the looks (their levels add up to α), a candidate that is not
/// better (not within the margin) is promoted with probability at most α, and one that is is
/// rejected with probability at most α, when pair differences are roughly normal (block returns
/// are sums of many ticks).
///
/// **Use.** Before each tick's decision, `arm` says who acts. When a transition closes, call
/// `record(reward:arm:episodeEnded:)` with the arm that acted when it was opened (or `skip` for
/// a tick whose state was unusable or whose action was a fallback) and act on the event.
public struct SwitchbackTrial: Sendable {
    /// The settings it runs with.
    public let config: TrialConfig
    private var rng: SeededGenerator
    private var clock: BlockClock
    /// The arm of the current pair's first block, and which block of the pair runs (0 or 1).
    private var first: TrialArm
    private var position = 0
    private var candidateReturn: Double?
    private var referenceReturn: Double?
    private var candidateBaseline = 0.0
    private var referenceBaseline = 0.0
    /// Whether pair differences are adjusted by an exogenous baseline (`record(reward:baseline:…)`).
    public let adjusted: Bool
    /// Running statistics of d (raw), of the decided difference (d − (b_candidate − b_reference)
    /// when adjusted, else d) and of its margin-shifted d′ over scored pairs.
    private var d = RunningMoments()
    private var dDecided = RunningMoments()
    private var dMargin = RunningMoments()
    /// d′ − f·|reference return| over scored pairs (f = `futility`; unused without it).
    private var dFutile = RunningMoments()
    private var candidateSum = 0.0
    private var referenceSum = 0.0
    // Carry-over: every scored block's return (adjusted as decided) by its arm and the arm of
    // the block before it. The block before a trial's first is the reference's (in charge).
    private var previousArm = TrialArm.reference
    /// The burn-ins' shortfall (`BlockClock.burnInShortfall`) of blocks that began with a
    /// switch, per arm switched to, and of blocks that followed their own arm (no switch).
    private var burnInAfterSwitchCandidate = RunningMoments()
    private var burnInAfterSwitchReference = RunningMoments()
    private var burnInWithoutSwitch = RunningMoments()
    private var candidateAfterCandidate = RunningMoments()
    private var candidateAfterReference = RunningMoments()
    private var referenceAfterCandidate = RunningMoments()
    private var referenceAfterReference = RunningMoments()
    private var completedPairs = 0
    private var voidPairs = 0
    private var ticks = 0
    private var skippedTicks = 0
    /// The running block's ticks and unscored ticks so far.
    private var blockTicks = 0
    private var blockSkipped = 0
    /// Every ended block, in order (room for the budget's pairs is reserved at start: no
    /// allocation on the decision path within it).
    public private(set) var blocks: [BlockRecord] = []
    /// One-sided t quantiles of the looks before the last, for n = minPairs ... maxPairs
    /// scored pairs: level (1 − w)·α / (L − 1), or α / L without a last-look share w.
    private let quantiles: [Double]
    /// The same for the last look (after the budget's last pair): level w·α, or α / L.
    private let lastQuantiles: [Double]
    /// One-sided t quantiles at level 1 − stop_confidence (uncorrected) for the same n; nil:
    /// a stop uses `quantiles`.
    private let stopQuantiles: [Double]?
    /// How the trial ended (nil while it runs).
    public private(set) var verdict: TrialVerdict?
    /// The seed of the pairs' order: a trial with the same config and seed runs its arms in
    /// the same order.
    public let seed: UInt64
    /// An earlier trial's estimate of the pairs' noise, for the early stop (nil: no early stop).
    public let borrowedNoise: PairNoise?
    /// The stop-loss's yardstick: the latest scored reference block, or before the first one
    /// the controller in charge's rate before the trial (`setPriorReference`); nil: none yet.
    private var yardstick: Yardstick?
    /// Every scored reference block's |return|, for the cost share of a trial the stop-loss
    /// ended, and its return as decided (adjusted when `adjusted`), for its spread.
    private var referenceMagnitudes = RunningMoments()
    private var referenceValues = RunningMoments()
    /// What the stop-loss saw when it ended the trial (nil otherwise).
    public private(set) var stopLoss: TrialStopLoss?
    /// The early stop's t quantiles for n = 1 ..< minPairs pairs (empty without `borrowedNoise`):
    /// the level of a corrected look before the last, on kₑ + n − 1 degrees of freedom.
    private let earlyQuantiles: [Double]

    /// A trial with `config`; `seed` draws the order of every pair.
    ///
    /// With `adjusted`, every pair difference is adjusted by the exogenous baselines the caller
    /// passes to `record(reward:baseline:arm:episodeEnded:)`: d_adj = d − (b_candidate −
    /// b_reference), b being the block's baseline sum over its scored ticks, scaled like its
    /// return; the decisions use d_adj. The baseline must be fixed before the trial and computed
    /// from exogenous data only: the pair's order is a fair coin, so b_candidate − b_reference
    /// has mean zero and d_adj estimates the same difference as d.
    ///
    /// - Throws: `TrialSettingsError` when a setting is out of range (block < 1, burn-in not
    ///   below the block, confidence outside (0.5, 1), margin outside [0, 1), min_pairs < 2,
    ///   max_pairs < min_pairs, last_look outside (0, 1), futility outside (0, 1), max_ticks < 1,
    ///   stop_loss outside (0, 10]): give values the mapping loader accepts.
    ///
    /// With `noise`, an earlier trial's estimate of the pairs' noise (with the same blocks and
    /// adjustment), a clearly worse candidate can be stopped before `minPairs` pairs (the
    /// type's comment, "Early stop").
    public init(config: TrialConfig, seed: UInt64, adjusted: Bool = false, noise: PairNoise? = nil) throws(TrialSettingsError) {
        try Self.validate(config)
        self.config = config
        self.adjusted = adjusted
        self.seed = seed
        borrowedNoise = noise
        rng = SeededGenerator(seed: seed)
        clock = BlockClock(block: config.block, burnIn: config.burnIn)
        let (interim, last) = Self.levels(config)
        quantiles = (config.minPairs...config.maxPairs).map { StudentT.quantile(1 - interim, degreesOfFreedom: Double($0 - 1)) }
        lastQuantiles = (config.minPairs...config.maxPairs).map { StudentT.quantile(1 - last, degreesOfFreedom: Double($0 - 1)) }
        stopQuantiles = config.stopConfidence.map { c in
            (config.minPairs...config.maxPairs).map { StudentT.quantile(c, degreesOfFreedom: Double($0 - 1)) }
        }
        earlyQuantiles = noise.map { e in
            (1..<config.minPairs).map { StudentT.quantile(1 - interim, degreesOfFreedom: Double(e.degreesOfFreedom + $0 - 1)) }
        } ?? []
        first = rng.next() & 1 == 0 ? .candidate : .reference
        blocks.reserveCapacity(2 * config.maxPairs)
    }

    /// The one-sided levels of a look before the last and of the last look: they add up to
    /// α = 1 − confidence over the at most L = maxPairs − minPairs + 1 looks (a single look
    /// gets all of α).
    public static func levels(_ c: TrialConfig) -> (interim: Double, last: Double) {
        let alpha = 1 - c.confidence
        let looks = c.maxPairs - c.minPairs + 1
        guard looks > 1 else { return (alpha, alpha) }
        guard let share = c.lastLookShare else { return (alpha / Double(looks), alpha / Double(looks)) }
        return ((1 - share) * alpha / Double(looks - 1), share * alpha)
    }

    static func validate(_ c: TrialConfig) throws(TrialSettingsError) {
        if case .ticks(let b) = c.block {
            guard b >= 1 else { throw TrialSettingsError(message: "trial block must be ≥ 1 tick, found \(b)") }
            guard c.burnIn >= 0, c.burnIn < b else {
                throw TrialSettingsError(message: "trial burn_in must be in 0..<block (\(b)), found \(c.burnIn)")
            }
        }
        guard c.confidence > 0.5, c.confidence < 1 else {
            throw TrialSettingsError(message: "trial confidence must be in (0.5, 1), e.g. 0.95, found \(c.confidence)")
        }
        guard c.margin >= 0, c.margin < 1 else { throw TrialSettingsError(message: "trial margin must be in [0, 1), found \(c.margin)") }
        if let sc = c.stopConfidence, !(sc > 0.5 && sc < 1) {
            throw TrialSettingsError(message: "trial stop_confidence must be in (0.5, 1) or nil, found \(sc)")
        }
        guard c.minPairs >= 2 else { throw TrialSettingsError(message: "trial min_pairs must be ≥ 2 (a t interval needs two pairs), found \(c.minPairs)") }
        guard c.maxPairs >= c.minPairs else {
            throw TrialSettingsError(message: "trial max_pairs (\(c.maxPairs)) must be at least min_pairs (\(c.minPairs))")
        }
        if let share = c.lastLookShare, !(share > 0 && share < 1) {
            throw TrialSettingsError(message: "trial last_look must be in (0, 1), e.g. 0.5, or nil (every look the same level), found \(share)")
        }
        if let f = c.futility, !(f > 0 && f < 1) {
            throw TrialSettingsError(message: "trial futility must be in (0, 1), e.g. 0.01, or nil (no futility stop), found \(f)")
        }
        if let t = c.maxTicks, t < 1 { throw TrialSettingsError(message: "trial max_ticks must be ≥ 1 (or nil), found \(t)") }
        if let l = c.stopLoss, !(l > 0 && l <= 10) {
            throw TrialSettingsError(message: "trial stop_loss must be in (0, 10], e.g. 0.5, or nil (no stop-loss), found \(l)")
        }
    }

    /// Who acts on the next tick.
    public var arm: TrialArm { position == 0 ? first : first.other }

    /// Whether the trial is decided.
    public var isFinished: Bool { verdict != nil }

    /// Whether no pair is under way: the next tick starts a pair's first block.
    public var betweenPairs: Bool { position == 0 && clock.ticks == 0 }

    /// Feeds one closed transition: its reward, the arm that acted when it was opened, and
    /// whether an episode ended with it. A transition opened by the other arm than the current
    /// block's (it straddled a handover) is counted as skipped.
    ///
    /// - Returns: `.switched(to:)` / `.continued(_:)` when a block ended with this tick,
    ///   `.verdict(_:)` when the trial is decided, nil otherwise (and always after a verdict).
    public mutating func record(reward: Double, arm acted: TrialArm, episodeEnded: Bool) -> TrialEvent? {
        record(reward: reward, baseline: 0, arm: acted, episodeEnded: episodeEnded)
    }

    /// `record(reward:arm:episodeEnded:)` with the tick's exogenous baseline (the predicted
    /// reward; ignored unless the trial is `adjusted`). A tick whose baseline is not finite is
    /// not scored.
    ///
    /// - Returns: as `record(reward:arm:episodeEnded:)`.
    public mutating func record(reward: Double, baseline: Double, arm acted: TrialArm, episodeEnded: Bool) -> TrialEvent? {
        guard verdict == nil else { return nil }
        let usable = acted == arm && reward.isFinite && (!adjusted || baseline.isFinite)
        return feed(reward: usable ? reward : nil, baseline: adjusted && usable ? baseline : 0, episodeEnded: episodeEnded)
    }

    /// Feeds a tick that must not be scored (unusable state, fallback or hold action, no
    /// reward): it takes its place in the block, and may end the episode and so the block.
    ///
    /// - Returns: as `record`.
    public mutating func skip(episodeEnded: Bool = false) -> TrialEvent? {
        guard verdict == nil else { return nil }
        return feed(reward: nil, episodeEnded: episodeEnded)
    }

    private mutating func feed(reward: Double?, baseline: Double = 0, episodeEnded: Bool) -> TrialEvent? {
        ticks += 1
        blockTicks += 1
        if reward == nil {
            skippedTicks += 1
            blockSkipped += 1
        }
        if !clock.tick(reward: reward, baseline: baseline, episodeEnded: episodeEnded) {
            if reward != nil, arm == .candidate, let stop = stopLossCheck() { return stop }
            return budgetCheck()
        }
        let value = clock.blockReturn
        let base = clock.blockBaseline ?? 0
        let nominal = clock.ticks - clock.burnIn
        let tickSD = clock.scoredRewardSD
        let scoredTicks = clock.scoredTicks
        let shortfall = clock.burnInShortfall
        countBurnIn(shortfall)
        clock.reset()
        blocks.append(BlockRecord(arm: arm, value: value, baseline: base, ticks: blockTicks, skippedTicks: blockSkipped, burnInShortfall: shortfall))
        blockTicks = 0
        blockSkipped = 0
        return endBlock(value: value, base: base, nominal: nominal, tickSD: tickSD, scoredTicks: scoredTicks)
    }

    /// How many standard deviations of the deficit the ticks' spread alone would make a
    /// stop-loss deficit must exceed, besides the share of a block.
    static let stopLossSpreads = 5.0
    /// How many of a pair's spread (when known: √2 × the reference blocks' spread, or an earlier
    /// trial's pairs') a stop-loss deficit must exceed.
    static let stopLossPairSpreads = 5.0
    /// The stop-loss's share is multiplied by this while its yardstick is the controller in
    /// charge's rate before the trial: raw rewards from another stretch of time, which the
    /// exogenous adjustment cannot correct.
    static let priorShareFactor = 2.0
    /// The stop-loss's share is multiplied by this while the pairs' spread is not known (fewer
    /// than `stopLossSpreadDegreesOfFreedom` behind it): on a plant with rough blocks (the tank) a
    /// candidate as good as the reference on average loses half a block in one block.
    static let unknownSpreadShareFactor = 2.0

    /// Degrees of freedom behind the pairs' spread (the reference's blocks pooled with an earlier
    /// trial's pairs) from which the stop-loss counts it known: below, its share is doubled.
    static let stopLossSpreadDegreesOfFreedom = 2

    /// The spread of a pair's difference the stop-loss allows for, and its degrees of freedom:
    /// √2 × the spread of the trial's scored reference blocks (n − 1 degrees of freedom),
    /// pooled with `borrowedNoise` (its own) when there is one; 0 with none.
    var stopLossPairSpread: (sd: Double, degreesOfFreedom: Int) {
        Self.pairSpread(referenceBlocks: referenceValues, borrowed: borrowedNoise)
    }

    /// A pair difference's spread from the reference's blocks alone: √2 × their spread
    /// (n − 1 degrees of freedom), pooled degree of freedom for degree of freedom with
    /// `borrowed` (an earlier trial's pairs); 0 on 0 degrees of freedom. The trial's stop-loss
    /// and the guard's (its control blocks) use it.
    static func pairSpread(referenceBlocks m: RunningMoments, borrowed: PairNoise?) -> (sd: Double, degreesOfFreedom: Int) {
        let ownDF = max(0, m.count - 1)
        let ownVariance = 2 * m.standardDeviation * m.standardDeviation
        let borrowedDF = borrowed?.degreesOfFreedom ?? 0
        let df = ownDF + borrowedDF
        guard df > 0 else { return (0, 0) }
        let pooled = (Double(ownDF) * ownVariance + Double(borrowedDF) * (borrowed?.variance ?? 0)) / Double(df)
        return (pooled.squareRoot(), df)
    }

    /// What the stop-loss measures a candidate's block against: a reward per scored tick
    /// (`rate`: baseline-adjusted when `isAdjusted`) and raw, the spread of the ticks behind
    /// `rate`, their count, and the scored ticks of a block (`nominal`).
    struct Yardstick {
        var rate: Double
        var rawRate: Double
        var tickSD: Double
        var scoredTicks: Int
        var nominal: Int
        /// The controller in charge's rate before the trial, not a block of it.
        var beforeTrial: Bool
        /// `rate` is of rewards less their exogenous baseline (the candidate's ticks are then
        /// compared the same way).
        var isAdjusted: Bool
        /// |A block's return| at the raw rate.
        var scale: Double { abs(rawRate * Double(nominal)) }
    }

    /// The stop-loss's yardstick before the trial's first scored reference block: the
    /// controller in charge's mean reward per tick `rate` over the `ticks` ticks just before the
    /// trial, with their standard deviation `tickSD`. Without it, a candidate whose block comes
    /// first in the first pair runs that block whole.
    ///
    /// `adjusted`: the same ticks' mean and spread of reward less the trial's exogenous
    /// baseline (the gateway replays its log through the candidate's baseline). In an adjusted
    /// trial they are the yardstick, at the stop-loss's share: the baseline was accepted because
    /// it makes a block-long window comparable with the one beside it (its placebo check pairs
    /// exactly such windows). Without them the comparison is raw, at twice the share (the
    /// gateway gives raw figures to unadjusted trials only: where exogenous signals move the
    /// reward, raw rewards of another stretch of time are no yardstick).
    ///
    /// Ignored for episode blocks, once a reference block of the trial has been scored, and for
    /// figures that are not finite or fewer than 2 ticks.
    public mutating func setPriorReference(rate: Double, tickSD: Double, ticks: Int, adjusted: (rate: Double, tickSD: Double)? = nil) {
        guard case .ticks = config.block, yardstick == nil, ticks >= 2, rate.isFinite, tickSD.isFinite, tickSD >= 0 else { return }
        let nominal = clock.nominalScoredTicks
        guard nominal > 0 else { return }
        if self.adjusted, let a = adjusted {
            guard a.rate.isFinite, a.tickSD.isFinite, a.tickSD >= 0 else { return }
            yardstick = Yardstick(rate: a.rate, rawRate: rate, tickSD: a.tickSD, scoredTicks: ticks, nominal: nominal, beforeTrial: true, isAdjusted: true)
        } else {
            yardstick = Yardstick(rate: rate, rawRate: rate, tickSD: tickSD, scoredTicks: ticks, nominal: nominal, beforeTrial: true, isAdjusted: false)
        }
    }

    /// The stop-loss (`TrialConfig.stopLoss`), after a scored tick of the candidate's block that
    /// did not end it: rejects at once when the block has lost more than the share of the
    /// latest scored reference block's |return|, tick for tick against that block's rate.
    private mutating func stopLossCheck() -> TrialEvent? {
        guard let share = config.stopLoss, let y = yardstick, y.scale > 0 || y.tickSD > 0 else { return nil }
        let scored = Double(clock.scoredTicks)
        let nominalScored = Double(max(1, clock.nominalScoredTicks))
        let earned = y.isAdjusted ? clock.scoredSum - clock.scoredBaselineSum : clock.scoredSum
        let deficit = scored * y.rate - earned
        // The share of a block; far beyond what the ticks' spread alone makes of this deficit
        // (rewards that hover around 0 make |return| a poor scale): k of the candidate's ticks
        // against a rate the reference's m ticks estimated, sd σ·√(k + k²/m) with σ the
        // reference's tick spread; and beyond five of what a pair's difference spreads by on this
        // plant, which carries its drift and its disturbances between blocks too. That spread is
        // the reference's own: √2 × the spread of its scored blocks (as decided) once two ran —
        // not the trial's pair differences, which a candidate that goes wrong widens itself
        // (thermal, 2026-12-07: one whose blocks went +10, +9, −25, −44 against the reference's
        // 7, −3, 3, 2, adjusted, had a limit of 135, more than two blocks, and in its next block
        // lost about five times the PI's daily return a day); pooled, degree of freedom for degree
        // of freedom, with an earlier trial's pairs when there is one (as the guard's looks pool
        // them). Known from two degrees of freedom on: from one (two reference blocks) it is the
        // difference of two numbers, below a fifth of the true spread one time in six (the tank,
        // 2026-12-07: a candidate level on average stopped after two pairs). Not scaled down for
        // a part of the block: a disturbance lands at once, not a tick at a time (scaled by
        // √(k/nominal), it stopped a tank candidate 5 % better on average after one rough half
        // block).
        let pair = stopLossPairSpread
        let pairsKnown = pair.degreesOfFreedom >= Self.stopLossSpreadDegreesOfFreedom
        let pairSD = pair.sd
        let spread = y.tickSD * (scored + scored * scored / Double(max(1, y.scoredTicks))).squareRoot()
        // Twice the share while nothing says how far a block may stray on this plant (no pairs'
        // spread yet), and twice again against the raw rate before the trial.
        let rawPrior = y.beforeTrial && !y.isAdjusted
        let shareLimit = share * (pairsKnown ? 1 : Self.unknownSpreadShareFactor) * (rawPrior ? Self.priorShareFactor : 1) * y.scale
        let limit = max(shareLimit, Self.stopLossSpreads * spread, Self.stopLossPairSpreads * pairSD)
        // A candidate ahead over the trial's pairs so far (as decided) may lose that lead too
        // before it is stopped: the stop-loss limits what the trial as a whole has lost. One
        // rough block of a candidate that has been as good on average is then left to the
        // statistics (the tank: 5 such stops in 5 seeds without this).
        let lead = max(0, dDecided.mean * Double(dDecided.count))
        guard deficit > limit + lead else { return nil }
        stopLoss = TrialStopLoss(blockTicks: blockTicks, scoredTicks: clock.scoredTicks, deficit: deficit, limit: limit,
                                 share: share, rawDeficit: scored * y.rawRate - clock.scoredSum,
                                 fraction: min(1, scored / nominalScored), referenceBlockDone: position == 1,
                                 referenceReturn: y.rawRate * Double(y.nominal),
                                 beforeTrial: y.beforeTrial, adjusted: y.isAdjusted, spreadKnown: pairsKnown, lead: lead)
        verdict = .reject
        return .verdict(.reject)
    }

    /// One ended block of the trial, as `resume` replays it.
    public struct BlockRecord: Sendable, Equatable {
        /// The arm that ran it.
        public var arm: TrialArm
        /// Its return (nil: void, fewer than half of its ticks scored).
        public var value: Double?
        /// Its exogenous baseline sum (0 when not adjusted).
        public var baseline: Double
        /// Its ticks.
        public var ticks: Int
        /// Its ticks that were not scored.
        public var skippedTicks: Int
        /// Its burn-in's rewards below the block's scored mean reward (`TrialSummary.switchLossCandidate`);
        /// nil when not known (no burn-in reward or no scored tick, or a record written before).
        public var burnInShortfall: Double?

        /// A block given figure by figure.
        public init(arm: TrialArm, value: Double?, baseline: Double, ticks: Int, skippedTicks: Int, burnInShortfall: Double? = nil) {
            self.arm = arm
            self.value = value
            self.baseline = baseline
            self.ticks = ticks
            self.skippedTicks = skippedTicks
            self.burnInShortfall = burnInShortfall
        }
    }

    /// Continues a trial with the same settings and seed that stopped (a gateway restart): its
    /// ended blocks are replayed in order, those of complete pairs only (a pair half run is run
    /// again, in the same order, so that its blocks stay adjacent in time). Call it on a fresh
    /// trial.
    ///
    /// - Returns: the pairs replayed; nil when the blocks do not fit this trial (an arm other
    ///   than this seed's order, a figure that is not finite, a verdict among them, or a trial
    ///   already fed): discard this trial then and start a fresh one.
    public mutating func resume(blocks recorded: [BlockRecord]) -> Int? {
        guard ticks == 0, blocks.isEmpty, verdict == nil else { return nil }
        let complete = recorded.count - recorded.count % 2
        for b in recorded.prefix(complete) {
            guard b.arm == arm, b.ticks >= 1, b.skippedTicks >= 0, b.skippedTicks <= b.ticks,
                  b.value.map({ $0.isFinite }) ?? true, b.baseline.isFinite, b.burnInShortfall.map({ $0.isFinite }) ?? true else { return nil }
            ticks += b.ticks
            skippedTicks += b.skippedTicks
            blocks.append(b)
            countBurnIn(b.burnInShortfall)
            if case .verdict? = endBlock(value: b.value, base: b.baseline, nominal: b.ticks - clock.burnIn, tickSD: nil, scoredTicks: 0) { return nil }
        }
        return completedPairs
    }

    /// Counts the ending block's burn-in shortfall (`BlockClock.burnInShortfall`; nil: none) by
    /// whether the block began with a switch (call before `endBlock`, which moves `previousArm`).
    private mutating func countBurnIn(_ shortfall: Double?) {
        guard let shortfall else { return }
        if arm == previousArm {
            burnInWithoutSwitch.add(shortfall)
        } else if arm == .candidate {
            burnInAfterSwitchCandidate.add(shortfall)
        } else {
            burnInAfterSwitchReference.add(shortfall)
        }
    }

    /// What a block that ended with `value` (nil: void) and baseline sum `base` over `nominal`
    /// scored ticks, its `scoredTicks` scored rewards' standard deviation `tickSD` (nil: not
    /// known, a replayed block), does to the trial.
    private mutating func endBlock(value: Double?, base: Double, nominal: Int, tickSD: Double?, scoredTicks: Int) -> TrialEvent? {
        let ended = arm
        if ended == .reference, let value, nominal > 0 {
            yardstick = tickSD.map { sd in
                Yardstick(rate: (adjusted ? value - base : value) / Double(nominal), rawRate: value / Double(nominal), tickSD: sd,
                          scoredTicks: scoredTicks, nominal: nominal, beforeTrial: false, isAdjusted: adjusted)
            }
            referenceMagnitudes.add(abs(value))
            referenceValues.add(adjusted ? value - base : value)
        }
        if let value {
            let scored = adjusted ? value - base : value
            switch (ended, previousArm) {
            case (.candidate, .candidate): candidateAfterCandidate.add(scored)
            case (.candidate, .reference): candidateAfterReference.add(scored)
            case (.reference, .candidate): referenceAfterCandidate.add(scored)
            case (.reference, .reference): referenceAfterReference.add(scored)
            }
        }
        previousArm = ended
        if ended == .candidate {
            candidateReturn = value
            candidateBaseline = base
        } else {
            referenceReturn = value
            referenceBaseline = base
        }
        if position == 0 {
            position = 1
            return budgetCheck() ?? .switched(to: arm)
        }
        // The pair is complete.
        completedPairs += 1
        if let c = candidateReturn, let r = referenceReturn {
            d.add(c - r)
            let decided = adjusted ? c - r - (candidateBaseline - referenceBaseline) : c - r
            dDecided.add(decided)
            dMargin.add(decided + config.margin * abs(r))
            dFutile.add(decided + (config.margin - (config.futility ?? 0)) * abs(r))
            candidateSum += c
            referenceSum += r
            if let v = decide() {
                verdict = v
                return .verdict(v)
            }
        } else {
            voidPairs += 1
        }
        if completedPairs >= config.maxPairs {
            verdict = .budgetExhausted
            return .verdict(.budgetExhausted)
        }
        if let v = budgetCheck() { return v }
        candidateReturn = nil
        referenceReturn = nil
        position = 0
        first = rng.next() & 1 == 0 ? .candidate : .reference
        return first == ended ? .continued(first) : .switched(to: first)
    }

    private mutating func budgetCheck() -> TrialEvent? {
        guard let limit = config.maxTicks, ticks >= limit else { return nil }
        verdict = .budgetExhausted
        return .verdict(.budgetExhausted)
    }

    /// The t quantile of the current look (nil before `minPairs` scored pairs): the last
    /// look's once the budget's pairs are complete (void ones included), else an earlier one's.
    private var currentQuantile: Double? {
        let n = d.count
        guard n >= config.minPairs, n - config.minPairs < quantiles.count else { return nil }
        return (completedPairs >= config.maxPairs ? lastQuantiles : quantiles)[n - config.minPairs]
    }

    /// The early stop's upper bound on mean(d′) after n < `minPairs` scored pairs, with the
    /// borrowed noise pooled (nil without it, before the first pair, or from `minPairs` on).
    private var earlyStopBound: Double? {
        let n = dMargin.count
        guard let e = borrowedNoise, n >= 1, n < config.minPairs else { return nil }
        let k = Double(e.degreesOfFreedom)
        let pooled = (k * e.variance + dMargin.sumOfSquares) / (k + Double(n - 1))
        return dMargin.mean + earlyQuantiles[n - 1] * (pooled / Double(n)).squareRoot()
    }

    private func decide() -> TrialVerdict? {
        guard let t = currentQuantile else {
            if let bound = earlyStopBound, bound < 0 { return .reject }
            return nil
        }
        let se = dMargin.standardDeviation / Double(dMargin.count).squareRoot()
        if dMargin.mean - t * se > 0 { return .promote }
        // A stop needs no correction for repeated looks (it can only lose a candidate), unless
        // `stop_confidence` is nil.
        let tStop = stopQuantiles.map { $0[dMargin.count - config.minPairs] } ?? t
        if dMargin.mean + tStop * se < 0 { return .reject }
        // Futility: not better than the futility share, with the stop's bound (like a reject,
        // it can only lose a candidate).
        if config.futility != nil, dFutile.mean + tStop * dFutile.standardDeviation / Double(dFutile.count).squareRoot() < 0 {
            return .futile
        }
        return nil
    }

    /// The trial so far, for reports (`<prefix>/retrain`, the model's report, metrics).
    public var summary: TrialSummary {
        let n = d.count
        var s = TrialSummary(pairs: n, voidPairs: voidPairs, ticks: ticks, skippedTicks: skippedTicks,
                             confidence: config.confidence, margin: config.margin, verdict: verdict)
        s.futility = config.futility
        s.adjusted = adjusted
        s.seed = seed
        s.borrowedNoise = borrowedNoise
        s.stopLossShare = config.stopLoss
        s.stopLoss = stopLoss
        setSwitching(&s)
        guard n > 0 else { return withStopLossCost(s) }
        s.earlyStopUpperBound = earlyStopBound
        s.meanDifference = dDecided.mean
        s.rawMeanDifference = d.mean
        if n >= 2 { s.standardDeviation = dDecided.standardDeviation }
        s.meanCandidate = candidateSum / Double(n)
        s.meanReference = referenceSum / Double(n)
        if let t = currentQuantile {
            let root = Double(n).squareRoot()
            let half = t * dDecided.standardDeviation / root
            s.interval = (dDecided.mean - half)...(dDecided.mean + half)
            let rawHalf = t * d.standardDeviation / root
            s.rawInterval = (d.mean - rawHalf)...(d.mean + rawHalf)
            let tStop = stopQuantiles.map { $0[n - config.minPairs] } ?? t
            s.stopUpperBound = dDecided.mean + tStop * dDecided.standardDeviation / root
            if config.futility != nil { s.futilityUpperBound = dFutile.mean + tStop * dFutile.standardDeviation / root }
        }
        let (cc, cr, rc, rr) = (candidateAfterCandidate, candidateAfterReference, referenceAfterCandidate, referenceAfterReference)
        if min(cc.count, cr.count, rc.count, rr.count) >= 2 {
            // δ_X = X after the other arm − X after itself; the pairs' mean difference carries
            // ¾(δ_candidate − δ_reference) of switching (TrialSummary.carryOver).
            let deltaCandidate = candidateAfterReference.mean - candidateAfterCandidate.mean
            let deltaReference = referenceAfterCandidate.mean - referenceAfterReference.mean
            s.carryOver = 0.75 * (deltaCandidate - deltaReference)
            func variance(_ m: RunningMoments) -> Double { m.standardDeviation * m.standardDeviation / Double(m.count) }
            s.carryOverStandardError = 0.75 * (variance(cc) + variance(cr) + variance(rc) + variance(rr)).squareRoot()
        }
        s.cost = max(0, -d.mean) * Double(n)
        s.setCostBase(abs(referenceSum / Double(n)) * Double(2 * n))
        return withStopLossCost(s)
    }

    /// The burn-ins' figures (`TrialSummary.switchLossCandidate` and the rest): what the
    /// switches themselves cost the plant, which the trial's scores leave out.
    private func setSwitching(_ s: inout TrialSummary) {
        let (c, r, same) = (burnInAfterSwitchCandidate, burnInAfterSwitchReference, burnInWithoutSwitch)
        s.switchLossCandidate = c.count > 0 ? -c.mean : nil
        s.switchLossReference = r.count > 0 ? -r.mean : nil
        s.burnInLossWithoutSwitch = same.count > 0 ? -same.mean : nil
        s.switches = c.count + r.count
        s.switchingCost = -(c.mean * Double(c.count) + r.mean * Double(r.count))
    }

    /// `s` with the block the stop-loss ended counted in the cost: its loss is part of what the
    /// trial cost, and that block (its scored part so far) and an unpaired reference block are
    /// part of what the reference would have earned.
    private func withStopLossCost(_ summary: TrialSummary) -> TrialSummary {
        guard let stop = stopLoss else { return summary }
        var s = summary
        s.cost += max(0, stop.rawDeficit)
        let blocksRun = Double(2 * s.pairs) + (stop.referenceBlockDone ? 1 : 0) + stop.fraction
        let magnitude = referenceMagnitudes.count > 0 ? referenceMagnitudes.mean : (yardstick?.scale ?? 0)
        s.setCostBase(magnitude * blocksRun)
        return s
    }
}

/// A switchback trial's figures, for reports.
public struct TrialSummary: Sendable, Equatable {
    /// Scored block pairs.
    public var pairs: Int
    /// Pairs left out because a block had fewer than half of its ticks scored.
    public var voidPairs: Int
    /// Ticks fed (scored, burn-in and skipped).
    public var ticks: Int
    /// Ticks fed as unusable (`skip`, or a transition opened by the other arm).
    public var skippedTicks: Int
    /// The trial's confidence.
    public var confidence: Double
    /// The trial's non-inferiority margin (0: superiority).
    public var margin: Double
    /// The verdict, once decided.
    public var verdict: TrialVerdict?
    /// The seed of the pairs' order (`SwitchbackTrial.seed`).
    public var seed: UInt64 = 0
    /// Whether the pair differences were adjusted by an exogenous baseline: then
    /// `meanDifference`, `interval` and `stopUpperBound` are the adjusted ones (what decided) and
    /// `rawMeanDifference`, `rawInterval` the unadjusted ones.
    public var adjusted = false
    /// Mean over scored pairs of candidate − reference block return, adjusted when `adjusted`:
    /// what the decisions use (nil before the first pair).
    public var meanDifference: Double?
    /// The sample standard deviation of the pair differences the decisions use (adjusted when
    /// `adjusted`; nil before two pairs). After a promotion the control-group guard borrows it
    /// (`ControlGroupGuard.PairNoise`): the trial measured the noise of the very contrast the
    /// guard goes on measuring.
    public var standardDeviation: Double?
    /// The interval on the mean difference at the current look: mean ± t·s/√n with the
    /// Bonferroni-corrected t quantile the decisions use (nil before `minPairs` pairs).
    public var interval: ClosedRange<Double>?
    /// Mean over scored pairs of the raw candidate − reference block return (equal to
    /// `meanDifference` when not adjusted).
    public var rawMeanDifference: Double?
    /// The same interval on the raw differences.
    public var rawInterval: ClosedRange<Double>?
    /// The stop's upper bound on the mean difference at the current look (`stop_confidence`,
    /// uncorrected; the corrected one when that is nil): below 0, the candidate is stopped
    /// (with a margin, the same bound on the margin-shifted difference decides).
    public var stopUpperBound: Double?
    /// The trial's futility share (nil: no futility stop).
    public var futility: Double?
    /// The futility bound at the current look: the stop's upper bound (`stop_confidence`) on the
    /// mean of d′ − futility·|reference return| (d′ the margin-shifted difference); below 0, the
    /// trial stopped as futile. Nil without a futility share or before `minPairs` pairs.
    public var futilityUpperBound: Double?
    /// The earlier trial's noise the early stop pools (nil: no early stop).
    public var borrowedNoise: PairNoise?
    /// The early stop's upper bound on the mean (margin-shifted) difference after fewer than
    /// `minPairs` pairs (nil without borrowed noise, before a pair or from `minPairs` on): below
    /// 0, the candidate was rejected early.
    public var earlyStopUpperBound: Double?
    /// The candidate's mean block return over scored pairs.
    public var meanCandidate: Double?
    /// The reference's mean block return over scored pairs.
    public var meanReference: Double?
    /// Reward the trial cost: max(0, −raw mean difference) × the candidate's scored blocks (0 when
    /// the candidate did better): what the plant lost, on raw returns.
    public var cost = 0.0
    /// `cost` as a share of what the reference would have earned over the trial's scored blocks
    /// (|mean reference block return| × 2 × pairs); nil when that is 0.
    public var costShare: Double?
    /// That denominator: what the reference would have earned over the trial's scored blocks (a
    /// block the stop-loss ended counted for its scored part); nil when there is none. Trials
    /// are pooled by it (Σ cost / Σ this), not by averaging their shares: a short trial of a
    /// wrecking candidate has a large share of little.
    public var costBase: Double?

    /// Sets `costBase` to `base` (nil unless positive) and `costShare` from it.
    mutating func setCostBase(_ base: Double) {
        costBase = base > 0 ? base : nil
        costShare = costBase.map { cost / $0 }
    }
    /// The part of `meanDifference` that switching itself made, estimated from the trial's own
    /// blocks (positive: in the candidate's favour); nil until each of the four cells below has
    /// two scored blocks. A block leaves the plant (and the other controller's memory: an
    /// integrator, a filter) in a state the next block starts from; the burn-in is meant to
    /// absorb that. With δ_X = mean return of arm X's blocks after the other arm's minus after
    /// its own, a pair's expected difference is the difference of the two controllers run
    /// alone plus ¾(δ_candidate − δ_reference) (the second block of a pair always follows the
    /// other arm; the first follows either, at random). Comparable to `meanDifference`: the
    /// verdict says more about the hand-over than about the controllers — lengthen the burn-in
    /// (docs/learning.md, "Carry-over").
    public var carryOver: Double?
    /// The standard error of `carryOver` (the four cells' means taken as independent).
    public var carryOverStandardError: Double?
    /// What a switch into each arm cost the plant in the block's burn-in, which the trial does
    /// not score: the mean, over the blocks that began with a switch to that arm, of the burn-in
    /// ticks' rewards below the block's own scored mean reward (positive: the burn-in earned less
    /// than the block once settled — a bump at the hand-over, e.g. the incumbent's integrator
    /// restarting from the candidate's last stage). Nil until such a block ended.
    public var switchLossCandidate: Double?
    /// See `switchLossCandidate`: switches to the reference.
    public var switchLossReference: Double?
    /// The same figure for blocks that followed a block of their own arm (no switch): what a
    /// burn-in falls short of its block by chance and drift; nil until such a block ended.
    public var burnInLossWithoutSwitch: Double?
    /// Blocks that began with a switch (the trial's first block counts when it is the candidate's).
    public var switches = 0
    /// The reward the switches cost the plant: the sum over the blocks that began with a switch
    /// of their burn-in's loss (`switchLossCandidate`'s per block; `burnInLossWithoutSwitch`
    /// says how far that figure strays without a switch). Not part of `cost`, which compares the
    /// arms' scored blocks: this is what running the trial costs whatever the candidate, on a
    /// plant whose hand-overs bump.
    public var switchingCost = 0.0
    /// `switchingCost` as a share of `costBase` (nil without one).
    public var switchingCostShare: Double? { costBase.map { switchingCost / $0 } }
    /// The trial's stop-loss share (`TrialConfig.stopLoss`; nil: none).
    public var stopLossShare: Double?
    /// What the stop-loss saw when it ended the trial (nil when it did not).
    public var stopLoss: TrialStopLoss?
}

/// The moment the stop-loss ended a trial (`TrialConfig.stopLoss`): the candidate's block had
/// lost more than the limit against the latest scored reference block, tick for tick.
public struct TrialStopLoss: Sendable, Equatable {
    /// Ticks of the candidate's block when it was stopped (burn-in included).
    public var blockTicks: Int
    /// Its scored ticks by then.
    public var scoredTicks: Int
    /// What those ticks lost against the reference block's rate, as the trial decides
    /// (baseline-adjusted when the trial is).
    public var deficit: Double
    /// The limit it passed: the largest of `share` × |the reference block's return|, five
    /// standard deviations of the deficit the ticks' spread alone makes (σ·√(k + k²/m): k
    /// scored ticks against the rate of the reference's m, σ its tick spread), and five times a
    /// pair's spread when known (√2 × the spread of the trial's reference blocks once two ran —
    /// not its pair differences, which a failing candidate widens itself —, before that an
    /// earlier trial's).
    public var limit: Double
    /// The stop-loss share.
    public var share: Double
    /// The same loss on raw rewards (the trial's cost).
    public var rawDeficit: Double
    /// The scored share of the block's nominal scored ticks by then (≤ 1).
    public var fraction: Double
    /// Whether the reference's block of the same pair had run (the pair's first block).
    public var referenceBlockDone: Bool
    /// The yardstick's block return (raw): the latest scored reference block's, or the controller
    /// in charge's rate before the trial × a block's scored ticks (`beforeTrial`).
    public var referenceReturn: Double
    /// The yardstick was the controller in charge's rate over the ticks before the trial: no
    /// reference block of the trial had been scored yet (raw rewards at twice the share, or
    /// less their exogenous baseline at the share: `adjusted`).
    public var beforeTrial: Bool
    /// The deficit was of rewards less their exogenous baseline (an adjusted trial, against its
    /// reference block or the adjusted rate before it); false: raw (`deficit` = `rawDeficit`).
    public var adjusted: Bool
    /// A pair's spread was known (two degrees of freedom behind it: three reference blocks of
    /// the trial, or fewer pooled with an earlier trial's pairs); when not, the share was doubled.
    public var spreadKnown: Bool
    /// The candidate's lead over the trial's completed pairs (the sum of their decided
    /// differences, when positive): the deficit had to pass `limit` + this.
    public var lead: Double
}

// MARK: - Blocks

/// One block's clock and score: ticks, burn-in, scored rewards, episode end.
struct BlockClock: Sendable {
    let block: TrialConfig.Block
    let burnIn: Int
    private(set) var ticks = 0
    private var scored = 0
    private var sum = 0.0
    /// The exogenous baseline summed over the same scored ticks as `sum`.
    private var baselineSum = 0.0
    /// The scored rewards' sum of squares.
    private var sumOfSquares = 0.0
    /// The burn-in's rewards (ticks before `burnIn` with a usable reward): their count and sum.
    private(set) var burnInRewards = 0
    private(set) var burnInSum = 0.0

    /// What the block's burn-in earned below the block's settled rate: the burn-in's rewards
    /// less as many ticks at the block's scored mean reward (negative: the burn-in lost that
    /// much). Nil without a scored tick or a burn-in reward.
    var burnInShortfall: Double? {
        guard scored > 0, burnInRewards > 0 else { return nil }
        return burnInSum - Double(burnInRewards) * sum / Double(scored)
    }

    /// The sample standard deviation of the block's scored rewards (nil below two).
    var scoredRewardSD: Double? {
        guard scored >= 2 else { return nil }
        let n = Double(scored)
        return max(0, (sumOfSquares - sum * sum / n) / (n - 1)).squareRoot()
    }

    /// The block's scored ticks so far, their rewards' sum and their baselines' sum.
    var scoredTicks: Int { scored }
    var scoredSum: Double { sum }
    var scoredBaselineSum: Double { baselineSum }
    /// The scored ticks the block will have when it ends: its length minus the burn-in (a
    /// block of ticks), or the ticks so far (an episode, whose end is not known).
    var nominalScoredTicks: Int {
        if case .ticks(let b) = block { return b - burnIn }
        return ticks - burnIn
    }

    init(block: TrialConfig.Block, burnIn: Int) {
        self.block = block
        if case .ticks = block { self.burnIn = burnIn } else { self.burnIn = 0 }
    }

    /// Counts one tick (scored when `reward` is not nil and it is past the burn-in; `baseline` is
    /// summed with a scored reward); true when the block ended with it.
    mutating func tick(reward: Double?, baseline: Double = 0, episodeEnded: Bool) -> Bool {
        if ticks >= burnIn, let reward {
            scored += 1
            sum += reward
            sumOfSquares += reward * reward
            baselineSum += baseline
        } else if let reward {
            burnInRewards += 1
            burnInSum += reward
        }
        ticks += 1
        switch block {
        case .ticks(let b): return ticks >= b
        case .episode: return episodeEnded
        }
    }

    /// The block's return: the scored sum, scaled to the nominal scored length when ticks were
    /// skipped; nil (void) when fewer than half of the nominal scored ticks were scored.
    var blockReturn: Double? {
        let nominal = ticks - burnIn
        guard nominal > 0, scored * 2 >= nominal, scored > 0 else { return nil }
        return scored == nominal ? sum : sum / Double(scored) * Double(nominal)
    }

    /// The block's baseline: its scored sum, scaled exactly like `blockReturn`; nil when that is.
    var blockBaseline: Double? {
        let nominal = ticks - burnIn
        guard nominal > 0, scored * 2 >= nominal, scored > 0 else { return nil }
        return scored == nominal ? baselineSum : baselineSum / Double(scored) * Double(nominal)
    }

    mutating func reset() {
        ticks = 0
        scored = 0
        sum = 0
        sumOfSquares = 0
        baselineSum = 0
        burnInRewards = 0
        burnInSum = 0
    }
}

/// Mean and variance by Welford's method.
struct RunningMoments: Sendable {
    private(set) var count = 0
    private(set) var mean = 0.0
    private var m2 = 0.0

    mutating func add(_ x: Double) {
        count += 1
        let delta = x - mean
        mean += delta / Double(count)
        m2 += delta * (x - mean)
    }

    /// The sum of squared deviations from the mean (0 below two values).
    var sumOfSquares: Double { max(0, m2) }

    /// Sample standard deviation (n − 1); 0 below two values.
    var standardDeviation: Double { count > 1 ? (max(0, m2) / Double(count - 1)).squareRoot() : 0 }
}
