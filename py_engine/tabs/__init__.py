"""The tab classifier: browser tabs sorted into categories by a small model that runs locally.

    normalize.tab_text(url, title)       the model's input (pure Python; also in the browser)
    categories.Categories                the categories: names, descriptions, group colours
    model.TabClassifier                  load (a deployed directory, or base + adapter), predict
    rules.categorise(rules, url, title)  the fallback rule set (data/rules.json, and the listed
                                         domains of data/listed_domains.json: listed_domains.py;
                                         guess=True: the word weights, word_weights.py)
    generator.generate(size, seed)       synthetic labelled tabs (host)
    train / evaluate / deploy / compress the `py-engine tabs` commands' work (host)
"""
