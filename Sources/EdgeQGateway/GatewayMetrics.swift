import EdgeQTopicMap
import EdgeQTrust

/// The gateway's metrics (docs/operations.md lists them), created once at start-up so the
/// decision path only bumps existing counters.
final class GatewayMetrics: Sendable {
    let registry: MetricsRegistry
    let ticks: Counter
    /// decisions[mode][action]; the last two columns are "hold" and "none" (no model).
    let decisions: [[Counter]]
    let fallbacks: [FallbackReason: Counter]
    let rejected: [Counter]  // indexed by DecodeFailure.rawValue
    let unrouted: Counter
    let incumbentSeen: Counter
    let incumbentMissing: Counter
    let shadowCompared: Counter
    let shadowAgreed: Counter
    let transitionsLogged: Counter
    let transitionsSkipped: Counter
    let invalidExpressions: Counter
    let controlCommands: Counter
    /// Commands whose signature (or the lab's `auth: none`) was accepted.
    let commandsAccepted: Counter
    /// Commands refused, by reason (every reason present from the start).
    let commandsRefused: [RefusalReason: Counter]
    /// Command messages dropped unread because too many waited for verification.
    let commandsDropped: Counter
    /// Batches of audit rows that could not be written.
    let auditFailures: Counter
    let latency: Histogram
    let mode: Gauge
    let modelVersion: Gauge
    let watchdogTrips: Counter
    let guardTrips: Counter
    let guardWatching: Gauge
    let novelConditions: Counter
    let explorations: Counter
    let outsideSupport: Counter
    let supportHandbacks: Counter
    let fp32TieBreaks: Counter
    let statePersistFailures: Counter
    let tickGaps: Counter
    let appliedReports: Counter
    let appliedMismatches: Counter
    /// The switchback trial: running (0/1), scored pairs, mean difference, cost, verdicts.
    let trialActive: Gauge
    /// 1 while the gateway is in charge of the plant (publishes its commands), 0 while the incumbent is.
    let gatewayInCharge: Gauge
    let trialPairs: Gauge
    let trialMeanDifference: Gauge
    let trialCost: Gauge
    let trialVerdicts: [String: Counter]
    /// Sparkplug B sessions of the edge nodes read: births, deaths, rebirth requests sent,
    /// payloads that were not Sparkplug B (mirrored from the receiver).
    let sparkplugBirths: Counter
    let sparkplugDeaths: Counter
    let sparkplugRebirthRequests: Counter
    let sparkplugUndecodable: Counter

    init(map: TopicMap) {
        let r = MetricsRegistry()
        registry = r
        ticks = r.counter("edgeq_ticks_total", help: "Decision ticks (period or trigger messages).")
        let columns = map.actions.map(\.name) + ["hold", "none"]
        decisions = ["shadow", "control"].map { mode in
            columns.map { r.counter("edgeq_decisions_total", help: "Decisions by chosen action and mode (hold: publish nothing; none: no model yet).", labels: [("action", $0), ("mode", mode)]) }
        }
        var fb: [FallbackReason: Counter] = [:]
        for reason in FallbackReason.allCases {
            fb[reason] = r.counter("edgeq_fallbacks_total", help: "Ticks where the safety policy replaced the model's choice, by reason.", labels: [("reason", reason.rawValue)])
        }
        fallbacks = fb
        rejected = DecodeFailure.allCases.map {
            r.counter("edgeq_rejected_payloads_total", help: "Signal values rejected while decoding payloads, by reason.", labels: [("reason", $0.metricName)])
        }
        let spHelp = "Sparkplug B messages of the edge nodes the signals read, by event (birth: NBIRTH/DBIRTH; death: NDEATH/DDEATH; rebirth_request: NCMD Node Control/Rebirth sent; undecodable: not a Sparkplug B payload)."
        sparkplugBirths = r.counter("edgeq_sparkplug_events_total", help: spHelp, labels: [("event", "birth")])
        sparkplugDeaths = r.counter("edgeq_sparkplug_events_total", help: spHelp, labels: [("event", "death")])
        sparkplugRebirthRequests = r.counter("edgeq_sparkplug_events_total", help: spHelp, labels: [("event", "rebirth_request")])
        sparkplugUndecodable = r.counter("edgeq_sparkplug_events_total", help: spHelp, labels: [("event", "undecodable")])
        unrouted = r.counter("edgeq_unrouted_messages_total", help: "Messages on topics that carry no signal.")
        incumbentSeen = r.counter("edgeq_incumbent_commands_total", help: "Commands of the incumbent observed.")
        incumbentMissing = r.counter("edgeq_incumbent_unobserved_ticks_total", help: "Shadow ticks whose incumbent command was not observed (logged with no action).")
        shadowCompared = r.counter("edgeq_shadow_compared_total", help: "Shadow ticks where the model's choice and the incumbent's command were both known.")
        shadowAgreed = r.counter("edgeq_shadow_agreed_total", help: "Of those, ticks where they were the same action.")
        transitionsLogged = r.counter("edgeq_transitions_submitted_total", help: "Transitions handed to the experience log writer.")
        transitionsSkipped = r.counter("edgeq_transitions_skipped_total", help: "Transitions not logged because the state at t+1 or the reward could not be assembled.")
        invalidExpressions = r.counter("edgeq_invalid_expressions_total", help: "Expression evaluations that gave a non-finite value (division by zero, log of 0, …).")
        controlCommands = r.counter("edgeq_control_commands_total", help: "Control-plane command messages received (before verification).")
        commandsAccepted = r.counter("edgeq_commands_total", help: "Control-plane commands by result: accepted (a valid signature by a key trusted for the verb, or auth none).", labels: [("result", "accepted")])
        var refused: [RefusalReason: Counter] = [:]
        for reason in RefusalReason.allCases {
            refused[reason] = r.counter("edgeq_commands_refused_total", help: "Control-plane commands refused before they were acted on, by reason (docs/security.md).", labels: [("reason", reason.rawValue)])
        }
        commandsRefused = refused
        commandsDropped = r.counter("edgeq_commands_dropped_total", help: "Command messages dropped unread because more than 1024 waited for verification (a flood).")
        auditFailures = r.counter("edgeq_audit_write_failures_total", help: "Batches of audit rows (commands accepted or refused) that could not be written to the experience log.")
        latency = r.histogram("edgeq_decision_seconds", help: "Time from the trigger message's arrival (or the period tick) to the decision published.",
                              bounds: [2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 5e-3, 2e-2, 0.1])
        mode = r.gauge("edgeq_mode", help: "0 shadow, 1 control.")
        modelVersion = r.gauge("edgeq_model_version", help: "The served model version (0: none).")
        explorations = r.counter("edgeq_explorations_total", help: "Control decisions that explored (a random allowed action within the exploration budget).")
        outsideSupport = r.counter("edgeq_states_outside_support_total", help: "Ticks whose state was outside the model's training support widened by safety.support_margin (shadow and control).")
        supportHandbacks = r.counter("edgeq_support_handbacks_total", help: "Times the gateway gave the plant back to its incumbent because the state left the served model's training support (safety.on_unsupported: incumbent).")
        fp32TieBreaks = r.counter("edgeq_fp32_tie_breaks_total", help: "Model decisions (precision mixed) where int8's two best allowed actions were closer than the model's tie margin, so the fp32 network decided.")
        guardTrips = r.counter("edgeq_guard_trips_total", help: "Times the guard rolled back (or returned to shadow) because the served model did worse than its control group.")
        guardWatching = r.gauge("edgeq_guard_watching", help: "1 while the control-group guard watches the served model (control mode, a model served, control_share > 0; through a switchback trial too), 0 otherwise.")
        novelConditions = r.counter("edgeq_guard_novel_conditions_total", help: "Times an exogenous signal left the range the served model's switchback trial saw, and the control-group guard began a probation (promotion.novelty_pairs).")
        statePersistFailures = r.counter("edgeq_state_persist_failures_total", help: "Failed attempts to record the mode in gateway-state.json (the mode is in effect; the write is retried).")
        tickGaps = r.counter("edgeq_tick_gaps_total", help: "Transitions that span missed ticks (tick.sequence or tick.max_gap), logged with the gap flag and not learned from as one step.")
        appliedReports = r.counter("edgeq_applied_reports_total", help: "Reports of the applied action received from the plant (the mapping's applied topic).")
        appliedMismatches = r.counter("edgeq_applied_mismatch_total", help: "Control transitions where the plant reported applying another action than the one the gateway published (logged with the plant's action and the applied_mismatch flag).")
        gatewayInCharge = r.gauge("edgeq_in_charge", help: "1 while the gateway is in charge of the plant (a model or the safety fallback publishes), 0 while the incumbent is (shadow, a trial's or the guard's incumbent blocks, control without a model).")
        trialActive = r.gauge("edgeq_trial_active", help: "1 while a switchback trial is under way (it runs in control mode).")
        trialPairs = r.gauge("edgeq_trial_pairs", help: "Scored block pairs of the current (or last) switchback trial.")
        trialMeanDifference = r.gauge("edgeq_trial_mean_difference", help: "Mean block return of the candidate minus the reference's, over the trial's scored pairs.")
        trialCost = r.gauge("edgeq_trial_cost", help: "Reward the last decided trial cost (what the candidate's blocks lost against the reference's; 0 when it did better).")
        var verdicts: [String: Counter] = [:]
        for v in ["promote", "reject", "futile", "budget-exhausted", "abandoned"] {
            verdicts[v] = r.counter("edgeq_trial_verdicts_total", help: "Switchback trials ended, by verdict.", labels: [("verdict", v)])
        }
        trialVerdicts = verdicts
        watchdogTrips = r.counter("edgeq_watchdog_trips_total", help: "Times the watchdog published the fallback because no decision was made in time (control mode).")
    }
}

/// Why the safety policy replaced the model's choice.
public enum FallbackReason: String, Sendable, CaseIterable {
    case stale, invalid, invalidFeature = "invalid_feature", outOfDistribution = "out_of_distribution"
    case handOverride = "hand_override", nonFiniteQ = "non_finite_q", noAllowedAction = "no_allowed_action"
    case noModel = "no_model", watchdog
    /// One of the chosen action's writes could not be rendered (an invalid value): nothing of
    /// it was published.
    case renderFailed = "render_failed"
    /// The state was outside the served model's training support (`safety.on_unsupported`
    /// `fallback` or `hold`).
    case outsideSupport = "outside_support"

    init(_ status: StateStatus) {
        switch status {
        case .ok: self = .invalid  // not used for .ok
        case .stale: self = .stale
        case .invalid: self = .invalid
        case .invalidFeature: self = .invalidFeature
        case .outOfDistribution: self = .outOfDistribution
        case .handOverride: self = .handOverride
        }
    }
}
