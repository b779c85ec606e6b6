#!/usr/bin/env node
// Builds Yjs documents with the real `yjs` package and prints the interop cases as JSON:
//   [{"name", "roots": {root name: "map"|"array"|"text"|"xml"}, "updates": [base64 v1 update],
//     "expected": {root name: JSON view}}]
// "updates" are sent in order; "expected" is read from a fresh Y.Doc that received exactly
// those updates (and checked against the documents that made them), so it is ground truth.
'use strict'

const Y = require('yjs')

const b64 = (update) => Buffer.from(update).toString('base64')

/** JSON with object keys sorted, to compare views whatever order the keys came in. */
const canonical = (value) => JSON.stringify(value, (_key, v) =>
  v && typeof v === 'object' && !Array.isArray(v)
    ? Object.fromEntries(Object.entries(v).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)))
    : v)

/** A document with a fixed client id, recording the updates of its local transactions. */
function newDoc (clientID) {
  const doc = new Y.Doc()
  doc.clientID = clientID
  const updates = []
  doc.on('update', (update, origin, _doc, tr) => {
    if (tr.local) updates.push(update)
  })
  return { doc, updates }
}

function getRoot (doc, name, kind) {
  switch (kind) {
    case 'map': return doc.getMap(name)
    case 'array': return doc.getArray(name)
    case 'text': return doc.getText(name)
    case 'xml': return doc.getXmlFragment(name)
    default: throw new Error(`unknown root kind ${kind}`)
  }
}

/** What Meridian's JSON view should show for each root, as Yjs itself renders it. */
function view (doc, roots) {
  const out = {}
  for (const [name, kind] of Object.entries(roots)) {
    const root = getRoot(doc, name, kind)
    out[name] = kind === 'map' || kind === 'array' ? root.toJSON() : root.toString()
  }
  return out
}

const cases = []

/** Records a case; `sources` are the documents whose state the updates must reproduce. */
function addCase (name, roots, updates, sources) {
  const reader = new Y.Doc()
  for (const update of updates) Y.applyUpdate(reader, update)
  if (reader.store.pendingStructs !== null || reader.store.pendingDs !== null) {
    throw new Error(`${name}: updates leave pending structs`)
  }
  const expected = view(reader, roots)
  for (const source of sources) {
    const seen = canonical(view(source, roots))
    if (seen !== canonical(expected)) {
      throw new Error(`${name}: reader sees ${canonical(expected)}, source ${seen}`)
    }
  }
  cases.push({ name, roots, updates: updates.map(b64), expected })
}

/** One update with a document's whole state. */
function whole (doc) {
  return [Y.encodeStateAsUpdate(doc)]
}

// -- a Y.Map root with every kind of value ----------------------------------------------------
{
  const { doc } = newDoc(1001)
  const map = doc.getMap('settings')
  doc.transact(() => {
    map.set('title', 'Meridian ✓')
    map.set('empty', '')
    map.set('int', 42)
    map.set('negative', -7)
    map.set('zero', 0)
    map.set('big', 2 ** 40)
    map.set('max_safe', Number.MAX_SAFE_INTEGER)
    map.set('float', 3.25)
    map.set('tenth', 0.1)
    map.set('tiny', 1e-7)
    map.set('huge', 1.5e300)
    map.set('yes', true)
    map.set('no', false)
    map.set('nothing', null)
    map.set('object', { a: 1, b: [true, null, 'x'], c: { d: 2.5 } })
    map.set('list', [1, 'two', { three: 3 }, [4]])
    const nested = new Y.Map()
    map.set('nested', nested)
    nested.set('theme', 'dark')
    nested.set('size', 12)
    const deeper = new Y.Map()
    nested.set('deeper', deeper)
    deeper.set('ok', true)
    const items = new Y.Array()
    map.set('items', items)
    items.push([1, 'a', { k: 'v' }])
  })
  addCase('map_root_values', { settings: 'map' }, whole(doc), [doc])
}

// -- a Y.Array root ---------------------------------------------------------------------------
function buildArray (doc, deleteFirst) {
  const array = doc.getArray('items')
  array.push([1, 2.5, 'three', true, null, { four: 4 }, [5, [6]]])
  const map = new Y.Map()
  array.push([map])
  map.set('name', 'nested map')
  map.set('n', 7)
  const text = new Y.Text()
  array.insert(1, [text])
  text.insert(0, 'nested text 🎉')
  array.delete(3, 1) // 'three'
  if (deleteFirst) array.delete(0, 1) // the root's first item becomes a deleted item
}
{
  const { doc } = newDoc(1002)
  buildArray(doc, false)
  addCase('array_root', { items: 'array' }, whole(doc), [doc])
}
{
  const { doc } = newDoc(1012)
  buildArray(doc, true)
  addCase('array_first_item_deleted', { items: 'array' }, whole(doc), [doc])
}

// -- a Y.Text root: emoji, CJK, deletions ----------------------------------------------------
function buildText (doc, deleteFirst) {
  const text = doc.getText('body')
  text.insert(0, 'Xhello world')
  text.insert(12, ' 👋🏽 家族 👨‍👩‍👧')
  text.insert(6, '漢字')
  text.delete(7, 6) // "字 worl"
  text.delete(text.length - 8, 2) // "👨": a surrogate pair
  if (deleteFirst) text.delete(0, 1) // the root's first item becomes a deleted item
  text.insert(1, 'Ω')
}
{
  const { doc } = newDoc(1003)
  buildText(doc, false)
  addCase('text_root_unicode', { body: 'text' }, whole(doc), [doc])
}
{
  const { doc } = newDoc(1013)
  buildText(doc, true)
  addCase('text_first_char_deleted', { body: 'text' }, whole(doc), [doc])
}

// -- formatted text: the view is the plain string ---------------------------------------------
{
  const { doc } = newDoc(1004)
  const text = doc.getText('rich')
  text.insert(0, 'Hello bold world')
  text.format(6, 4, { bold: true })
  text.insert(0, '¡', { italic: true })
  text.format(0, 3, { link: { href: 'https://example.org' } })
  text.insert(text.length, ' — end 😀', { color: '#f00' })
  text.format(7, 4, { bold: null })
  addCase('text_formatted', { rich: 'text' }, whole(doc), [doc])
}

// -- an XML fragment ----------------------------------------------------------------------------
{
  const { doc } = newDoc(1005)
  const fragment = doc.getXmlFragment('xml')
  const p = new Y.XmlElement('p')
  p.setAttribute('class', 'c')
  p.insert(0, [new Y.XmlText('hello')])
  const div = new Y.XmlElement('div')
  div.setAttribute('id', 'main')
  const span = new Y.XmlElement('span')
  span.insert(0, [new Y.XmlText('in span ✓')])
  div.insert(0, [new Y.XmlText('before '), span])
  fragment.insert(0, [p, div, new Y.XmlText('tail')])
  addCase('xml_fragment', { xml: 'xml' }, whole(doc), [doc])
}
{
  // Yjs's toString sorts an element's attributes by name.
  const { doc } = newDoc(1015)
  const element = new Y.XmlElement('div')
  for (const name of ['id', 'data-x', 'b', 'a', 'zz', 'c', 'title', 'lang', 'role', 'dir']) {
    element.setAttribute(name, `v-${name}`)
  }
  doc.getXmlFragment('xml').insert(0, [element])
  addCase('xml_attribute_order', { xml: 'xml' }, whole(doc), [doc])
}
{
  // Yjs's toString lower-cases node names.
  const { doc } = newDoc(1025)
  const element = new Y.XmlElement('DIV')
  element.insert(0, [new Y.XmlText('upper')])
  doc.getXmlFragment('xml').insert(0, [element])
  addCase('xml_upper_case_name', { xml: 'xml' }, whole(doc), [doc])
}

// -- several roots in one document -------------------------------------------------------------
{
  const { doc } = newDoc(4294967000) // client ids are uint32: one near the top
  doc.transact(() => {
    doc.getMap('meta').set('owner', 'ana')
    doc.getArray('tags').push(['a', 'b'])
    doc.getText('title').insert(0, 'Several roots')
    const heading = new Y.XmlElement('h1')
    heading.insert(0, [new Y.XmlText('Title')])
    doc.getXmlFragment('page').insert(0, [heading])
  })
  const roots = { meta: 'map', tags: 'array', title: 'text', page: 'xml' }
  addCase('several_roots', roots, whole(doc), [doc])
}

// -- incremental updates, as doc.on('update') emits them -----------------------------------------
{
  const { doc, updates } = newDoc(1007)
  const map = doc.getMap('state')
  const text = doc.getText('log')
  map.set('step', 1)
  text.insert(0, 'first')
  map.set('step', 2)
  text.insert(0, '[') // before the first item: a right origin only
  text.insert(text.length, ']')
  const list = new Y.Array()
  map.set('list', list)
  list.push(['x'])
  list.insert(0, ['w'])
  text.delete(1, 2)
  map.delete('step')
  map.set('done', true)
  const roots = { state: 'map', log: 'text' }
  addCase('incremental_updates', roots, updates, [doc])
  // The same updates the other way round: each waits for the ones it depends on.
  addCase('incremental_updates_reversed', roots, [...updates].reverse(), [doc])
}

// -- two concurrent clients on the same text and map --------------------------------------------
{
  const a = newDoc(2001)
  const b = newDoc(2002)
  a.doc.getText('text').insert(0, 'shared base')
  a.doc.getMap('map').set('k', 'base')
  a.doc.getMap('map').set('drop', 'base')
  Y.applyUpdate(b.doc, Y.encodeStateAsUpdate(a.doc))
  // Concurrent edits, neither side sees the other's yet.
  a.doc.getText('text').insert(0, 'A: ')
  a.doc.getText('text').insert(14, ' (by A)')
  a.doc.getMap('map').set('k', 'from A')
  a.doc.getMap('map').set('only_a', 1)
  b.doc.getText('text').insert(0, 'B: ')
  b.doc.getText('text').delete(3, 7) // "shared "
  b.doc.getMap('map').set('k', 'from B')
  b.doc.getMap('map').set('only_b', 2)
  b.doc.getMap('map').delete('drop')
  const updates = [...a.updates, ...b.updates]
  Y.applyUpdate(a.doc, Y.encodeStateAsUpdate(b.doc))
  Y.applyUpdate(b.doc, Y.encodeStateAsUpdate(a.doc))
  addCase('concurrent_clients', { text: 'text', map: 'map' }, updates, [a.doc, b.doc])
}

// -- a key overwritten several times, and a deleted key -----------------------------------------
{
  const { doc, updates } = newDoc(1009)
  const map = doc.getMap('config')
  map.set('mode', 'a')
  map.set('mode', 'b')
  map.set('mode', 3)
  map.set('mode', { final: true })
  map.set('gone', 'soon')
  map.set('kept', 'here')
  map.delete('gone')
  addCase('map_overwrites_and_delete', { config: 'map' }, whole(doc), [doc])
  addCase('map_overwrites_and_delete_incremental', { config: 'map' }, updates, [doc])
}

// -- the same, beside a text whose first character was deleted -----------------------------------
{
  const { doc } = newDoc(1010)
  const map = doc.getMap('config')
  map.set('mode', 'a')
  map.set('mode', 'b')
  const text = doc.getText('body')
  text.insert(0, 'Xhi')
  text.delete(0, 1)
  addCase('map_overwrite_beside_text_first_deleted', { config: 'map', body: 'text' }, whole(doc), [doc])
}

process.stdout.write(JSON.stringify(cases))
