// A real Yjs client (yjs + y-websocket's WebsocketProvider over `ws`), driven by JSON lines on
// stdin; each command is answered with one JSON line on stdout. Used by tests/test_live_js.py.
//
//   node live_client.js ws://127.0.0.1:PORT/v1/sync DOC_ID
//   {"cmd": "insert", "root": "body", "index": 0, "text": "hi"}
//   {"cmd": "set", "root": "settings", "key": "k", "value": 1}
//   {"cmd": "awareness", "state": {"user": "ada"}}
//   {"cmd": "disconnect"} / {"cmd": "connect", "url": "ws://..."}   (offline edits in between)
//   {"cmd": "dump"}   -> {"synced", "connected", "text", "map", "peers": [awareness states]}
//   {"cmd": "exit"}
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'

const [url, docId] = process.argv.slice(2)
const doc = new Y.Doc()
let provider = null

function connect (serverUrl) {
  provider = new WebsocketProvider(serverUrl, docId, doc, { WebSocketPolyfill: WebSocket })
}

connect(url)

function dump () {
  const peers = []
  provider.awareness.getStates().forEach((state, client) => {
    if (client !== doc.clientID) peers.push(state)
  })
  return {
    synced: provider.synced,
    connected: provider.wsconnected,
    text: doc.getText('body').toString(),
    map: doc.getMap('settings').toJSON(),
    peers
  }
}

const lines = readline.createInterface({ input: process.stdin })
lines.on('line', (line) => {
  const command = JSON.parse(line)
  let answer = { ok: true }
  switch (command.cmd) {
    case 'insert': doc.getText(command.root).insert(command.index, command.text); break
    case 'set': doc.getMap(command.root).set(command.key, command.value); break
    case 'awareness': provider.awareness.setLocalState(command.state); break
    case 'disconnect': provider.disconnect(); break
    case 'connect':
      provider.destroy()
      connect(command.url)
      break
    case 'dump': answer = dump(); break
    case 'exit':
      provider.destroy()
      process.stdout.write(JSON.stringify(answer) + '\n', () => process.exit(0))
      return
    default: answer = { ok: false, error: `unknown command ${command.cmd}` }
  }
  process.stdout.write(JSON.stringify(answer) + '\n')
})
