#!/usr/bin/env node
// Loads Yjs v1 updates into a fresh Y.Doc with the real `yjs` package and prints the roots.
//
//   node read_update.js NAME:KIND ...   (KIND: map | array | text | xml)
//
// stdin: base64 updates, one per line, applied in order. stdout: JSON
//   {"content": {NAME: view}, "pending": bool, "state_vector": base64,
//    "odd": [paths of values JSON cannot carry]}
// where a view is toJSON() for maps and arrays and toString() for text and XML; "odd" lists
// BigInts, binary, undefined and text with lone surrogates, so the caller can refuse them.
'use strict'

const Y = require('yjs')

function getRoot (doc, name, kind) {
  switch (kind) {
    case 'map': return doc.getMap(name)
    case 'array': return doc.getArray(name)
    case 'text': return doc.getText(name)
    case 'xml': return doc.getXmlFragment(name)
    default: throw new Error(`unknown root kind ${kind} (use map, array, text or xml)`)
  }
}

/** Paths of values that are not plain JSON (a BigInt would mean Meridian wrote an integer). */
function oddValues (value, path, found) {
  const kind = typeof value
  if (kind === 'bigint' || kind === 'undefined' || value instanceof Uint8Array) {
    found.push(`${path}: ${kind === 'object' ? 'Uint8Array' : kind}`)
  } else if (kind === 'number' && !Number.isFinite(value)) {
    found.push(`${path}: ${value}`)
  } else if (kind === 'string' && !value.isWellFormed()) {
    found.push(`${path}: string with lone surrogates`)
  } else if (Array.isArray(value)) {
    value.forEach((item, i) => oddValues(item, `${path}[${i}]`, found))
  } else if (value !== null && kind === 'object') {
    for (const [key, item] of Object.entries(value)) oddValues(item, `${path}.${key}`, found)
  }
  return found
}

const doc = new Y.Doc()
const input = require('fs').readFileSync(0, 'utf8')
for (const line of input.split('\n')) {
  if (line.trim()) Y.applyUpdate(doc, Buffer.from(line.trim(), 'base64'))
}
const content = {}
for (const spec of process.argv.slice(2)) {
  const [name, kind] = spec.split(':')
  const root = getRoot(doc, name, kind)
  content[name] = kind === 'map' || kind === 'array' ? root.toJSON() : root.toString()
}
const odd = oddValues(content, '$', [])
const pending = doc.store.pendingStructs !== null || doc.store.pendingDs !== null
const stateVector = Buffer.from(Y.encodeStateVector(doc)).toString('base64')
process.stdout.write(JSON.stringify({ content, pending, state_vector: stateVector, odd }, (_key, v) =>
  typeof v === 'bigint' ? `${v}n` : v))
