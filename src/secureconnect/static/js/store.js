// IndexedDB: the device's state (keys, sessions, read messages) never leaves this browser.
const DB = "secureconnect";

// One connection for the page's life, not one per save: a device saves its state after every
// message it reads, and opening IndexedDB each time costs more than the write on a busy machine.
let connection = null;

function open() {
  connection = connection || new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore("kv");
    req.onsuccess = () => {
      const db = req.result;
      // Another tab upgrading or deleting the database, or the browser closing it: let go, and
      // open anew on the next use.
      db.onversionchange = () => { db.close(); connection = null; };
      db.onclose = () => { connection = null; };
      resolve(db);
    };
    req.onerror = () => { connection = null; reject(req.error); };
  });
  return connection;
}

async function run(mode, fn) {
  const db = await open();
  return new Promise((resolve, reject) => {
    let tx;
    try { tx = db.transaction("kv", mode); } catch (error) { connection = null; throw error; }
    const req = fn(tx.objectStore("kv"));
    tx.oncomplete = () => resolve(req && req.result);
    // An abort without an error (the page closing the connection) must settle too.
    tx.onabort = () => reject(tx.error || new DOMException("transaction aborted", "AbortError"));
  });
}

export const load = (key) => run("readonly", (s) => s.get(key));
export const save = (key, value) => run("readwrite", (s) => s.put(value, key));
export const remove = (key) => run("readwrite", (s) => s.delete(key));
export async function wipe() {
  await run("readwrite", (s) => s.clear());
}
