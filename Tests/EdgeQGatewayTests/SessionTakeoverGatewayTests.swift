// A second client connects with the gateway's client id (as a second gateway started with the
// same mapping would). The broker hands it the session and drops the gateway; the gateway
// reports it in its log (error), its status (`counters.mqtt_session_takeovers`,
// `mqtt_warning`) and the metric `edgeq_mqtt_session_takeovers_total`, and reconnects after a
// growing delay rather than at once.
import EdgeQGateway
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

@Suite struct SessionTakeoverGatewayTests {
    @Test func anotherClientWithTheGatewaysIdIsReported() throws {
        let h = try GatewayHarness(yaml: testMapping())
        defer { h.stop() }
        _ = try h.waitFor(topic: "edgeq/t1/status", timeout: 10) { String(decoding: $0.payload, as: UTF8.self).contains("online") }
        #expect(h.metric("edgeq_mqtt_session_takeovers_total") == 0)

        // The intruder takes the session, then leaves after 0.5 s; the gateway comes back.
        let intruderConfig = try MQTTConfiguration(url: h.broker.url, clientID: h.map.gateway.clientID)
        let intruder = try MQTTClient(intruderConfig)
        intruder.start()
        try intruder.waitUntilConnected(timeout: 10)
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline && h.metric("edgeq_mqtt_session_takeovers_total") < 1 { usleep(20_000) }
        #expect(h.metric("edgeq_mqtt_session_takeovers_total") >= 1)
        usleep(300_000)
        intruder.stop()

        let status = try h.waitFor(topic: "edgeq/t1/status", timeout: 10) {
            String(decoding: $0.payload, as: UTF8.self).contains("mqtt_warning")
        }
        let json = GatewayHarness.json(status)
        #expect(json["state"] as? String == "online")
        #expect(((json["counters"] as? [String: Any])?["mqtt_session_takeovers"] as? Double ?? 0) >= 1, "\(json)")
        let warning = json["mqtt_warning"] as? String ?? ""
        #expect(warning.contains("taken over") && warning.contains(h.map.gateway.clientID), "\(json)")
    }
}
