// A LwM2M 1.0 device on lwm2m-node-lib (text/plain only) for the interop test.
//
//   NODE_PATH=<dir with node_modules> node client.js <host> <port> <endpoint>
//
// Registers with the Device object (/3/0) and the Server object (/1/0), prints one JSON line
// per event on stdout ({"event": "registered", "location": "rd/..", "port": N}, ...) and reads
// commands from stdin, one per line: "update" (the library sends it from a new source port),
// "deregister", "quit".
'use strict';

var lwm2m = require('lwm2m-node-lib'),
    readline = require('readline'),
    client = lwm2m.client,
    host = process.argv[2],
    port = Number(process.argv[3]),
    endpoint = process.argv[4],
    device = null;

var config = {
    client: {
        lifetime: '300',
        version: '1.0',
        logLevel: 'FATAL',
        observe: {period: 3000},
        ipProtocol: 'udp4',
        serverProtocol: 'udp4',
        formats: [{name: 'lightweightm2m/text', value: 1541}],
        writeFormat: 'lightweightm2m/text'
    }
};

function say(event, extra) {
    process.stdout.write(JSON.stringify(Object.assign({event: event}, extra || {})) + '\n');
}

function fail(what, error) {
    say('error', {what: what, error: String(error)});
    process.exit(2);
}

function populate(done) {
    var registry = client.registry;
    registry.create('/3/0', function(error) {
        if (error) { return fail('create /3/0', error); }
        registry.setResource('/3/0', '0', 'fleetloop-node', function() {
            registry.setResource('/3/0', '1', 'node-lib-1.4', function() {
                registry.setResource('/3/0', '9', '87', function() {
                    registry.create('/1/0', function() {
                        registry.setResource('/1/0', '1', '300', done);
                    });
                });
            });
        });
    });
}

client.init(config);
populate(function() {
    client.register(host, port, null, endpoint, function(error, info) {
        if (error) { return fail('register', error); }
        device = info;
        say('registered', {location: info.location, port: info.localPort});
    });
});

readline.createInterface({input: process.stdin}).on('line', function(line) {
    var command = line.trim();
    if (command === 'update') {
        client.update(device, function(error, info) {
            if (error) { return fail('update', error); }
            device = info || device;
            say('updated', {port: device.localPort});
        });
    } else if (command === 'deregister') {
        client.unregister(device, function(error) {
            if (error) { return fail('deregister', error); }
            say('deregistered');
        });
    } else if (command === 'quit') {
        process.exit(0);
    }
});
