-- Key vault and storage account names are global (they are DNS labels): enforce it in the
-- database too, so no interleaving of writers can create two resources with one name.
CREATE UNIQUE INDEX resources_global_names ON resources (type, name)
    WHERE type IN ('microsoft.keyvault/vaults', 'microsoft.storage/storageaccounts');
