import EdgeQLog
import EdgeQModel
import EdgeQNet
import EdgeQPlants
import EdgeQRetrain
import EdgeQTopicMap
import Foundation

/// Distillation on the heater (docs/learning.md, "Distillation: the planner teaches the int8
/// network"): the PI's shadow log through the shipped mapping (topics/heater.yaml), a plant
/// model learned from it, the planner on that model valuing each first action on the logged
/// states (`PlanTeacher`), a Q-network of the mapping's architecture regressed on those values
/// and quantized (`Distillation`), then measured against its teacher on held-out states (the
/// newest part of the log) and in control through the lab (the one decision core).
public enum HeaterDistillation {
    /// The mapping's reward is the plant's reward × 0.1 (topics/heater.yaml: `reward: -0.1 *
    /// (abs(temp - setpoint) + power_pct / 100)`; the plant's `reward` field is the same without
    /// the 0.1): the teacher's values are on the log's `reward` scale, the one retraining's
    /// checks (the value bound, the TD error) read.
    public static let mappingRewardScale = 0.1

    /// The teacher: the relaxed planner of `HeaterPlanning` (64 ticks, doubling blocks) on
    /// `model`, the heater's reward on predicted signals on the mapping's scale, discounted by
    /// the mapping's γ.
    public static func teacher(map: TopicMap, model: any PlantModel, horizon: Int = 64,
                               parameters: Heater.Parameters = .init()) -> PlanTeacher {
        let plant = HeaterPlanning.reward(parameters)
        let scale = mappingRewardScale
        return PlanTeacher(map: map, model: model, configuration: HeaterPlanning.configuration(parameters, relaxed: true, horizon: horizon),
                           reward: { y, e, m, k in scale * plant(y, e, m, k) })
    }

    /// What one distillation did and measured on the log.
    public struct Outcome: Sendable {
        /// The learned plant model the teacher planned on.
        public var model: any PlantModel
        /// Its description.
        public var modelDescription: String
        /// The distilled model (int8 quantized, the mapping's architecture).
        public var student: QModel
        /// Training and held-out states the teacher valued.
        public var trainStates: Int
        public var heldOutStates: Int
        /// The fp32 training loss (teacher's units², the mapping's reward scale).
        public var trainLoss: Double
        /// The spreads of the teacher's state values and action differences (`Distillation.Result`).
        public var valueSpread: Double
        public var differenceSpread: Double
        /// Agreement of the int8 network with the teacher on the held-out states.
        public var heldOut: Distillation.Agreement
        /// The fp32 network's agreement on the held-out states (what quantization costs).
        public var heldOutFP32: Distillation.Agreement
        /// The int8 network's agreement on the training states.
        public var train: Distillation.Agreement
        /// Seconds spent by the teacher (valuing the states) and the training.
        public var teacherSeconds: Double
        public var trainSeconds: Double
        /// The teacher's values on the PI's log (training and held-out).
        public var teacherSamples: [PlanTeacher.Sample]
        /// Training states from the student's own runs (DAgger rounds), included in `trainStates`.
        public var studentStates: Int
    }

    /// The settings of one distillation.
    public struct Settings: Sendable {
        /// Shifts of the PI's shadow log (960 steps each) and its seed.
        public var shifts = 6
        public var logSeed: UInt64 = 1000
        /// The teacher values every `every`-th usable row (1: all).
        public var every = 1
        /// The newest share of the valued states held out (by time).
        public var heldOutShare = 0.2
        /// The planner's horizon (ticks).
        public var horizon = 64
        /// The tolerance of the tolerant agreement (teacher's units: the mapping's reward × discounted ticks).
        public var tolerance = 0.03
        /// The student's training (hidden widths are the mapping's `learning.hidden`).
        public var updates = 30000
        public var differenceWeight: Float = 1
        public var seed: UInt64 = 1
        /// Rounds of the student in control (DAgger): each round the latest student serves the
        /// heater through the lab for `studentShifts` shifts on a training seed (`logSeed` + the
        /// round: never an evaluation seed), the teacher values the states it visited, and the
        /// student is trained again on every state valued so far. 0: the PI's log only.
        public var studentRounds = 3
        public var studentShifts = 2

        /// The defaults above.
        public init() {}
    }

    /// Logs the PI for `settings.shifts` shifts (no dither) through `map` into `logPath`, learns
    /// the plant model (the standard selection), lets the planner value the logged states and
    /// distils them into a Q-network.
    ///
    /// - Throws: `LabError` when the log cannot be written, `PlantDataError` / `PlantModelError`
    ///   when the model cannot be learned, `DistillationError` when the student cannot be trained.
    public static func distil(map: TopicMap, logPath: String, settings: Settings = .init()) throws -> Outcome {
        var plant = HeaterLabPlant(seed: settings.logSeed)
        _ = try Lab(map: map).run(&plant, steps: settings.shifts * Heater.Parameters().episodeSteps,
                                  policy: .incumbent(dither: 0), seed: settings.logSeed, logPath: logPath)
        let rows = try ExperienceLog.open(path: logPath, create: false).transitions(window: .all)
        let (data, _) = try PlantDataReader(map: map, minimumSamples: 30).read(rows: rows)
        let (model, _) = try PlantModelSelection(fitters: PlantModelClasses.standard(), seed: settings.logSeed).select(data)
        var outcome = try distil(map: map, rows: rows, model: model, settings: settings)
        // DAgger: the states the student visits in control, valued by the teacher. The PI's log
        // shows none of them (the planner's stage patterns, its own approach to a setpoint), and a
        // student trained on the PI's states alone served far worse than its agreement suggests.
        var extra: [Distillation.Example] = []
        for round in 0..<settings.studentRounds {
            let path = logPath + ".student\(round + 1)"
            let seed = settings.logSeed &+ UInt64(round + 1)
            var plant = HeaterLabPlant(seed: seed)
            var lab = Lab(map: map)
            lab.precision = .int8
            _ = try lab.run(&plant, steps: settings.studentShifts * Heater.Parameters().episodeSteps, policy: .model(outcome.student),
                            seed: seed, logPath: path)
            let own = try ExperienceLog.open(path: path, create: false).transitions(window: .all)
            let t0 = Date()
            extra += try teacher(map: map, model: model, horizon: settings.horizon).samples(rows: own, every: settings.every).map(\.example)
            let seconds = Date().timeIntervalSince(t0)
            let previous = outcome
            outcome = try distil(map: map, rows: rows, model: model, settings: settings, extra: extra, teacherSamples: outcome.teacherSamples)
            outcome.teacherSeconds = previous.teacherSeconds + seconds
            outcome.studentStates = extra.count
        }
        return outcome
    }

    /// Distils the planner on `model` valuing `rows` (a log of the heater through `map`).
    /// `extra`: more training examples (the teacher's values on states the student visited);
    /// `teacherSamples`: the teacher's values on `rows` when already computed.
    public static func distil(map: TopicMap, rows: [LoggedTransition], model: any PlantModel, settings: Settings = .init(),
                              extra: [Distillation.Example] = [], teacherSamples: [PlanTeacher.Sample]? = nil) throws -> Outcome {
        let t0 = Date()
        let samples = try teacherSamples ?? teacher(map: map, model: model, horizon: settings.horizon).samples(rows: rows, every: settings.every)
        let teacherSeconds = Date().timeIntervalSince(t0)
        // Held out by time: the newest share of the valued states.
        let heldCount = max(Int((Double(samples.count) * settings.heldOutShare).rounded()), 1)
        let train = samples.dropLast(heldCount).map(\.example) + extra
        let held = samples.suffix(heldCount).map(\.example)
        let t1 = Date()
        let config = Distillation.Configuration(hidden: map.learning.hidden, updates: settings.updates,
                                                differenceWeight: settings.differenceWeight, seed: settings.seed)
        let result = try Distillation.train(train, actionNames: map.actions.map(\.name), configuration: config,
                                            training: ["teacher": "planner on \(model.description)", "gateway": map.gateway.id,
                                                       "gamma": String(map.learning.gamma)])
        let trainSeconds = Date().timeIntervalSince(t1)
        return Outcome(model: model, modelDescription: model.description, student: result.model, trainStates: train.count, heldOutStates: held.count,
                       trainLoss: result.trainLoss, valueSpread: result.valueSpread, differenceSpread: result.differenceSpread,
                       heldOut: Distillation.agreement(result.model, precision: .int8, on: held, tolerance: settings.tolerance),
                       heldOutFP32: Distillation.agreement(result.model, precision: .fp32, on: held, tolerance: settings.tolerance),
                       train: Distillation.agreement(result.model, precision: .int8, on: train, tolerance: settings.tolerance),
                       teacherSeconds: teacherSeconds, trainSeconds: trainSeconds, teacherSamples: samples, studentStates: extra.count)
    }

    /// The distilled network serving the heater through the lab (control mode, the one decision
    /// core) on `seed` for `steps` steps, at `precision` (int8: the network alone).
    public static func runStudent(_ model: QModel, map: TopicMap, seed: UInt64, steps: Int, precision: Precision = .int8) throws -> HeaterPlanning.Run {
        var plant = HeaterLabPlant(seed: seed)
        var lab = Lab(map: map)
        lab.precision = precision
        _ = try lab.run(&plant, steps: steps, policy: .model(model), seed: seed)
        let s = plant.heater.score
        return HeaterPlanning.Run(steps: s.steps, totalReward: s.totalReward, meanAbsError: s.meanAbsError, energyKWh: s.energyKWh,
                                  setpointChanges: s.setpointChanges)
    }
}
