import EdgeQModel
import EdgeQPlants

/// The heater run by its PI incumbent (no dither; the plant's own setpoint changes excite
/// it), logged as the gateway would: one segment per shift, the product temperature as the
/// controlled signal, the ambient temperature (and, when asked, the setpoint) as exogenous.
enum HeaterLog {
    static func record(seed: UInt64, shifts: Int, withSetpoint: Bool = false, parameters: Heater.Parameters = .init()) throws -> PlantData {
        var heater = Heater(seed: seed, parameters: parameters)
        var pi = HeaterPI(heater: heater)
        func exogenous(_ s: HeaterStep) -> [Double] { withSetpoint ? [s.ambientTemp, s.setpoint] : [s.ambientTemp] }
        var segments: [PlantSegment] = []
        for _ in 0..<shifts {
            var obs = heater.observation
            var y = [[obs.temp]], e = [exogenous(obs)], a: [Int] = []
            while true {
                let level = pi.decide(obs)
                obs = heater.step(level: level)
                a.append(level)
                y.append([obs.temp])
                e.append(exogenous(obs))
                if obs.truncated { break }
            }
            segments.append(PlantSegment(controlled: y, exogenous: e, actions: a))
            _ = heater.startNextShiftIfEnded()
        }
        return try PlantData(controlledNames: ["temp"], exogenousNames: withSetpoint ? ["ambient", "setpoint"] : ["ambient"],
                             actionCount: heater.parameters.levels.count, segments: segments)
    }
}
