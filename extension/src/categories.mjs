// The user's categories as the engine keeps them (py_engine/tabs/categories.py, to_dict):
// [{id, name, description, colour}], colours those chrome.tabGroups offers. A lookup only:
// changes go to the engine (rename_category, add_category, remove_category).

export class CategoryList {
  constructor(items = []) {
    this.items = items.map((c) => ({ id: c.id, name: c.name, description: c.description || "", colour: c.colour || "grey" }));
  }

  static fromJSON(data) {
    return new CategoryList(Array.isArray(data) ? data : data?.categories || []);
  }

  byId(id) {
    return this.items.find((c) => c.id === id) || null;
  }

  byName(name) {
    return this.items.find((c) => c.name === name) || null;
  }

  ids() {
    return this.items.map((c) => c.id);
  }
}
